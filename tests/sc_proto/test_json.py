"""Tests for sc_proto.json: canonical encoding, the strict decoder and the fast encoder."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sc_proto.errors import CanonicalJSONError, Codes, LocalProtocolError
from sc_proto.json import (
    MAX_SAFE_INTEGER,
    decode_json,
    decode_json_object,
    encode_canonical_json,
    encode_json,
)
from tests.sc_proto import vectors
from tests.sc_proto.vectors import vector_params

# --------------------------------------------------------------------------------------------
# Helpers


def _integral_floats(literal: str) -> Any:
    """The conformance README's ``integral-floats-as-int`` number mode."""
    number = float(literal)
    return int(number) if number.is_integer() else number


def _has_float_literal(text: str) -> bool:
    found: list[str] = []
    json.loads(text, parse_float=lambda s: found.append(s))
    return bool(found)


def _spec_escape(text: str) -> str:
    """Reference string encoding written from the spec's canonical JSON grammar."""
    short = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"', "\\": "\\\\"}
    out = []
    for ch in text:
        if ch in short:
            out.append(short[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _reordered(value: Any, rnd: random.Random) -> Any:
    """A deep copy of ``value`` whose dicts have shuffled insertion order."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: _reordered(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [_reordered(v, rnd) for v in value]
    return value


def _depth(value: Any) -> int:
    """Reference nesting depth: scalars 0, a container 1 + its deepest child."""
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _errcode(excinfo: pytest.ExceptionInfo[CanonicalJSONError]) -> Codes:
    return excinfo.value.errcode


safe_ints = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
# Strings lean on the characters that could confuse the depth scan.
json_text = st.text(max_size=20) | st.text('[]{}"\\:,u', max_size=12)
json_scalars = st.none() | st.booleans() | safe_ints | json_text
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(json_text, children, max_size=5),
    max_leaves=15,
)
# Recursive values are the slow strategy; fewer examples keep this file within a few seconds.
value_settings = settings(max_examples=50, deadline=None)
unsafe_ints = st.integers(min_value=MAX_SAFE_INTEGER + 1) | st.integers(max_value=-MAX_SAFE_INTEGER - 1)

# --------------------------------------------------------------------------------------------
# Conformance vectors


class TestCanonicalVectors:
    """Every vector of conformance/vectors/canonical_json.json."""

    @pytest.mark.parametrize("vector", vector_params("canonical_json"))
    def test_encoder_matches_vector(self, vector: dict[str, Any]) -> None:
        """encode_canonical_json produces the expected bytes, or raises for rejected inputs."""
        if "input_text" in vector:
            assert vector.get("number_mode") == "integral-floats-as-int"
            value = json.loads(vector["input_text"], parse_float=_integral_floats)
        else:
            value = vector["input"]
        if vector.get("expected_error"):
            with pytest.raises(CanonicalJSONError):
                encode_canonical_json(value)
            return
        out = encode_canonical_json(value)
        assert isinstance(out, bytes)
        assert out == vector["expected"].encode("utf-8")

    @pytest.mark.parametrize("vector", vector_params("canonical_json"))
    def test_decoder_agrees_with_vector(self, vector: dict[str, Any]) -> None:
        """The strict decoder reads each vector's text the way the vector intends."""
        if "input_text" in vector:
            text = vector["input_text"]
            if _has_float_literal(text):
                # e.g. spec example 10 ("1e10"): valid for the encoder's number mode, but a float
                # literal that the strict decoder must refuse.
                with pytest.raises(CanonicalJSONError) as excinfo:
                    decode_json(text)
                assert _errcode(excinfo) is Codes.BAD_JSON
                return
            decoded = decode_json(text)
            assert encode_canonical_json(decoded) == vector["expected"].encode("utf-8")
            return
        text = json.dumps(vector["input"], ensure_ascii=False)
        if vector.get("expected_error"):
            with pytest.raises(CanonicalJSONError) as excinfo:
                decode_json(text.encode("utf-8"))
            assert _errcode(excinfo) is Codes.BAD_JSON
            return
        assert decode_json(vector["expected"].encode("utf-8")) == vector["input"]
        assert decode_json(text) == vector["input"]


# --------------------------------------------------------------------------------------------
# Canonical encoder


class TestEncodeCanonicalJson:
    """encode_canonical_json."""

    @pytest.mark.parametrize("code", range(0x20))
    def test_control_characters_escaped_per_grammar(self, code: int) -> None:
        """Each ASCII control uses its short escape or lowercase \\u00XX, as the grammar says."""
        ch = chr(code)
        assert encode_canonical_json(ch) == _spec_escape(ch).encode("utf-8")

    def test_nothing_else_escaped(self) -> None:
        """DEL, '/', U+2028/9 and non-ASCII are written raw in UTF-8."""
        text = "\x7f/\u2028\u2029é日😀"
        assert encode_canonical_json(text) == ('"' + text + '"').encode("utf-8")

    def test_keys_sorted_by_code_point(self) -> None:
        """Keys sort by code point (U+FFFF before U+1F600), not by UTF-16 units."""
        assert encode_canonical_json({"😀": 1, "\uffff": 2, "a": 3}) == '{"a":3,"\uffff":2,"😀":1}'.encode()

    def test_mappings_and_tuples_accepted(self) -> None:
        """Read-only mappings encode as sorted objects and tuples as arrays."""
        value = MappingProxyType({"b": (1, 2), "a": MappingProxyType({"d": 1, "c": 2})})
        assert encode_canonical_json(value) == b'{"a":{"c":2,"d":1},"b":[1,2]}'

    def test_booleans_are_not_range_checked_ints(self) -> None:
        """True/False encode as JSON booleans."""
        assert encode_canonical_json([True, False, None]) == b"[true,false,null]"

    @pytest.mark.parametrize(
        "value",
        [1.5, 1.0, float("nan"), float("inf"), [0.0], {"a": {"b": (2.5,)}}, MappingProxyType({"x": 0.1})],
    )
    def test_floats_rejected(self, value: Any) -> None:
        """Any float, at any depth and in any container, is refused."""
        with pytest.raises(CanonicalJSONError):
            encode_canonical_json(value)

    @pytest.mark.parametrize("value", [2**53, -(2**53), 2**64, [[-(2**70)]], {"a": (2**53,)}])
    def test_out_of_range_integers_rejected(self, value: Any) -> None:
        """Integers outside +-(2^53-1) are refused with M_BAD_JSON."""
        with pytest.raises(CanonicalJSONError) as excinfo:
            encode_canonical_json(value)
        assert _errcode(excinfo) is Codes.BAD_JSON

    @pytest.mark.parametrize("value", [{1: "a"}, {None: 1}, {"a": {True: 1}}, {(1, 2): 3}, {1: 1, "a": 2}])
    def test_non_string_keys_rejected(self, value: Any) -> None:
        """Object keys must be strings; the stdlib's silent key conversion is not allowed."""
        with pytest.raises(CanonicalJSONError):
            encode_canonical_json(value)

    @pytest.mark.parametrize("value", [{1, 2}, b"bytes", object(), [1, {"a": bytearray(b"x")}]])
    def test_unencodable_types_rejected(self, value: Any) -> None:
        """Types JSON cannot represent raise CanonicalJSONError, not TypeError."""
        with pytest.raises(CanonicalJSONError):
            encode_canonical_json(value)

    @pytest.mark.parametrize("value", ["\ud800", {"\udc00": 1}, ["a\ud83d"]])
    def test_lone_surrogates_rejected(self, value: Any) -> None:
        """A string with a lone surrogate has no UTF-8 form."""
        with pytest.raises(CanonicalJSONError):
            encode_canonical_json(value)

    def test_cycles_rejected(self) -> None:
        """A self-referencing structure raises instead of looping."""
        loop: list[Any] = []
        loop.append(loop)
        with pytest.raises(CanonicalJSONError):
            encode_canonical_json(loop)

    def test_deep_nesting_raises_typed_error(self) -> None:
        """Absurd nesting raises CanonicalJSONError rather than RecursionError."""
        value: Any = 1
        for _ in range(100_000):
            value = [value]
        with pytest.raises(CanonicalJSONError):
            encode_canonical_json(value)

    @value_settings
    @given(json_values)
    def test_round_trip(self, value: Any) -> None:
        """decode_json(encode_canonical_json(x)) == x for any in-range JSON value."""
        assert decode_json(encode_canonical_json(value), max_depth=1000) == value

    @value_settings
    @given(json_values, st.randoms(use_true_random=False))
    def test_independent_of_insertion_order(self, value: Any, rnd: random.Random) -> None:
        """Dicts with the same items encode to the same bytes whatever their insertion order."""
        assert encode_canonical_json(_reordered(value, rnd)) == encode_canonical_json(value)

    @value_settings
    @given(json_values)
    def test_idempotent(self, value: Any) -> None:
        """Canonical output re-encodes to itself."""
        once = encode_canonical_json(value)
        assert encode_canonical_json(decode_json(once, max_depth=1000)) == once

    @settings(deadline=None)
    @given(st.text())
    def test_strings_follow_grammar(self, text: str) -> None:
        """Every string encodes exactly as the spec grammar's shortest form."""
        assert encode_canonical_json(text) == _spec_escape(text).encode("utf-8")

    @settings(deadline=None)
    @given(unsafe_ints)
    def test_unsafe_integers_always_rejected(self, number: int) -> None:
        """Every out-of-range integer is refused by the encoder and the decoder."""
        with pytest.raises(CanonicalJSONError):
            encode_canonical_json({"n": number})
        with pytest.raises(CanonicalJSONError) as excinfo:
            decode_json(f'{{"n":{number}}}')
        assert _errcode(excinfo) is Codes.BAD_JSON

    @settings(deadline=None)
    @given(st.floats())
    def test_floats_always_rejected(self, number: float) -> None:
        """Every float (integral, NaN, infinite) is refused by the encoder and the decoder."""
        with pytest.raises(CanonicalJSONError):
            encode_canonical_json([number])
        with pytest.raises(CanonicalJSONError) as excinfo:
            decode_json(json.dumps([number]))
        assert _errcode(excinfo) is Codes.BAD_JSON


# --------------------------------------------------------------------------------------------
# Fast encoder


class TestEncodeJson:
    """encode_json."""

    def test_compact_utf8_insertion_order(self) -> None:
        """Output is compact UTF-8 with keys in insertion order."""
        assert encode_json({"b": [1, "é"], "a": None}) == '{"b":[1,"é"],"a":null}'.encode()

    def test_floats_and_big_ints_allowed(self) -> None:
        """The fast encoder does not apply canonical JSON's number rules."""
        assert encode_json({"f": 1.5, "n": 2**60}) == b'{"f":1.5,"n":1152921504606846976}'

    def test_mappings_accepted(self) -> None:
        """Read-only mappings encode as objects."""
        assert encode_json(MappingProxyType({"a": 1})) == b'{"a":1}'

    @pytest.mark.parametrize("value", [float("nan"), float("-inf"), {1, 2}, "\ud800", object()])
    def test_unrepresentable_rejected(self, value: Any) -> None:
        """NaN, sets, lone surrogates and arbitrary objects raise CanonicalJSONError."""
        with pytest.raises(CanonicalJSONError):
            encode_json(value)

    @value_settings
    @given(json_values)
    def test_round_trip(self, value: Any) -> None:
        """decode_json(encode_json(x)) == x."""
        assert decode_json(encode_json(value), max_depth=1000) == value


# --------------------------------------------------------------------------------------------
# Strict decoder


class TestDecodeJson:
    """decode_json and decode_json_object."""

    @pytest.mark.parametrize(
        "data",
        [
            b'{"a": [1, "x"]}',
            bytearray(b'{"a": [1, "x"]}'),
            memoryview(b'{"a": [1, "x"]}'),
            '{"a": [1, "x"]}',
        ],
    )
    def test_accepts_bytes_like_and_str(self, data: Any) -> None:
        """bytes, bytearray, memoryview and str inputs all parse."""
        assert decode_json(data) == {"a": [1, "x"]}

    def test_whitespace_and_scalars(self) -> None:
        """Insignificant whitespace is allowed; scalars parse at top level."""
        assert decode_json(" \t\r\n true \n") is True
        assert decode_json("null") is None
        assert decode_json('"\\u65E5"') == "日"

    def test_negative_zero_is_zero(self) -> None:
        """-0 is an integer literal and decodes to 0."""
        assert decode_json("-0") == 0

    @pytest.mark.parametrize(
        "text", ["1.0", "1e5", "1E5", "-0.0", "1e-5", "0.5", "[1, 2.5]", '{"a": {"b": 3e0}}', "-1.5E+3"]
    )
    def test_floats_rejected(self, text: str) -> None:
        """Any number with a fraction or exponent is M_BAD_JSON."""
        with pytest.raises(CanonicalJSONError) as excinfo:
            decode_json(text)
        assert _errcode(excinfo) is Codes.BAD_JSON

    @pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", '{"a": [NaN]}'])
    def test_nan_and_infinity_rejected(self, text: str) -> None:
        """The stdlib's NaN/Infinity extensions are M_BAD_JSON."""
        with pytest.raises(CanonicalJSONError) as excinfo:
            decode_json(text)
        assert _errcode(excinfo) is Codes.BAD_JSON

    @pytest.mark.parametrize("number", [MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 999_999_999_999_999, 0])
    def test_integer_bounds_accepted(self, number: int) -> None:
        """Integers up to +-(2^53-1) parse exactly."""
        assert decode_json(str(number)) == number

    @pytest.mark.parametrize(
        "text", [str(2**53), str(-(2**53)), str(2**64), "9" * 17, "-" + "9" * 16, "1" * 5000]
    )
    def test_integer_out_of_range_rejected(self, text: str) -> None:
        """Integers beyond +-(2^53-1), however long, are M_BAD_JSON (never ValueError)."""
        with pytest.raises(CanonicalJSONError) as excinfo:
            decode_json(text)
        assert _errcode(excinfo) is Codes.BAD_JSON

    def test_lax_integers_for_old_rooms(self) -> None:
        """strict_integers=False accepts big integers but still refuses floats and huge literals."""
        assert decode_json(str(2**64), strict_integers=False) == 2**64
        with pytest.raises(CanonicalJSONError):
            decode_json("1.5", strict_integers=False)
        with pytest.raises(CanonicalJSONError):
            decode_json("1" * 5000, strict_integers=False)

    @pytest.mark.parametrize(
        "text", ['{"a": 1, "a": 2}', '{"a": 1, "b": {"c": 1, "c": 1}}', '[{"x": 1, "y": 2, "x": 3}]']
    )
    def test_duplicate_keys_rejected(self, text: str) -> None:
        """A repeated key in any object is M_BAD_JSON."""
        with pytest.raises(CanonicalJSONError) as excinfo:
            decode_json(text)
        assert _errcode(excinfo) is Codes.BAD_JSON

    def test_same_key_in_different_objects_allowed(self) -> None:
        """Keys only need to be unique within one object."""
        assert decode_json('{"a": {"a": 1}}') == {"a": {"a": 1}}

    @value_settings
    @given(st.dictionaries(st.text(max_size=5), safe_ints, min_size=1), st.data())
    def test_duplicate_keys_always_rejected(self, obj: dict[str, int], data: st.DataObject) -> None:
        """Repeating any key of any object makes the document invalid."""
        key = data.draw(st.sampled_from(sorted(obj)))
        body = json.dumps(obj)[:-1] + ", " + json.dumps(key) + ": 0}"
        with pytest.raises(CanonicalJSONError) as excinfo:
            decode_json(body)
        assert _errcode(excinfo) is Codes.BAD_JSON

    @pytest.mark.parametrize(
        "data",
        [
            b'"\xff"',
            b'"\xc0\xaf"',
            b'"\xed\xa0\x80"',
            b'"\xe6\x97"',
            b"\xef\xbb\xbf{}",
            "{}".encode("utf-16"),
        ],
    )
    def test_invalid_utf8_rejected(self, data: bytes) -> None:
        """Invalid UTF-8 (bad bytes, overlong forms, encoded surrogates, BOMs, UTF-16) is M_NOT_JSON."""
        with pytest.raises(CanonicalJSONError) as excinfo:
            decode_json(data)
        assert _errcode(excinfo) is Codes.NOT_JSON

    @pytest.mark.parametrize(
        "text",
        ['"\\ud800"', '"\\uDC00"', '"\\ud800x"', '"\\ud800\\ud800"', '{"\\ud83d": 1}', '["ok", ["\\udfff"]]'],
    )
    def test_lone_surrogate_escapes_rejected(self, text: str) -> None:
        """Escapes that leave a lone surrogate are M_BAD_JSON."""
        with pytest.raises(CanonicalJSONError) as excinfo:
            decode_json(text)
        assert _errcode(excinfo) is Codes.BAD_JSON

    def test_surrogate_pairs_and_escaped_backslashes_allowed(self) -> None:
        """A proper pair decodes; '\\\\ud800' is a backslash plus text, not an escape."""
        assert decode_json('"\\ud83d\\ude00"') == "😀"
        assert decode_json('"\\\\ud800"') == "\\ud800"

    def test_raw_lone_surrogate_in_text_rejected(self) -> None:
        """A str argument holding a raw lone surrogate is not valid text."""
        with pytest.raises(CanonicalJSONError):
            decode_json('"\ud800"')

    def test_depth_limit_exact(self) -> None:
        """Nesting equal to max_depth passes; one more level is M_BAD_JSON."""
        assert decode_json("[" * 100 + "]" * 100) == decode_json("[" * 100 + "]" * 100, max_depth=1000)
        nested = '{"a":' * 60 + "[" * 40 + "]" * 40 + "}" * 60
        assert decode_json(nested) is not None
        with pytest.raises(CanonicalJSONError) as excinfo:
            decode_json("[" * 101 + "]" * 101)
        assert _errcode(excinfo) is Codes.BAD_JSON
        with pytest.raises(CanonicalJSONError):
            decode_json('{"a":' * 61 + "[" * 40 + "]" * 40 + "}" * 61)

    def test_depth_limit_configurable(self) -> None:
        """max_depth=0 allows only scalars; a negative limit is caller misuse."""
        assert decode_json("1", max_depth=0) == 1
        with pytest.raises(CanonicalJSONError):
            decode_json("[]", max_depth=0)
        assert decode_json("[[]]", max_depth=2) == [[]]
        with pytest.raises(LocalProtocolError):
            decode_json("1", max_depth=-1)

    def test_brackets_in_strings_do_not_count(self) -> None:
        """Brackets inside strings (including after escaped quotes) are not nesting."""
        text = '["' + "[" * 500 + '", "\\"{{{{' + "{" * 500 + '", {"k]]": "\\\\"}]'
        assert decode_json(text)[0] == "[" * 500

    def test_wide_documents_pass_depth_scan(self) -> None:
        """Many shallow containers (more brackets than max_depth) are fine."""
        assert decode_json("[" + ",".join(["[{}]"] * 1000) + "]") == [[{}]] * 1000

    @value_settings
    @given(json_values, st.integers(min_value=0, max_value=6))
    def test_depth_limit_matches_real_depth(self, value: Any, max_depth: int) -> None:
        """The depth pre-scan accepts exactly the documents whose real nesting fits the limit,
        whatever brackets, quotes and backslashes their strings hold."""
        text = encode_json(value)
        if _depth(value) <= max_depth:
            assert decode_json(text, max_depth=max_depth) == value
        else:
            with pytest.raises(CanonicalJSONError) as excinfo:
                decode_json(text, max_depth=max_depth)
            assert _errcode(excinfo) is Codes.BAD_JSON

    def test_huge_depth_rejected_without_recursion(self) -> None:
        """A million open brackets are rejected by the pre-scan, not by RecursionError."""
        with pytest.raises(CanonicalJSONError) as excinfo:
            decode_json("[" * 1_000_000 + "]" * 1_000_000)
        assert _errcode(excinfo) is Codes.BAD_JSON

    def test_recursion_backstop(self) -> None:
        """Even with an enormous max_depth, deep input yields CanonicalJSONError."""
        with pytest.raises(CanonicalJSONError):
            decode_json("[" * 100_000 + "]" * 100_000, max_depth=10**9)

    @pytest.mark.parametrize("text", ["{} x", "{}{}", "1 2", '"a" "b"', "[1]]", "null,"])
    def test_trailing_garbage_rejected(self, text: str) -> None:
        """Anything but whitespace after the value is M_NOT_JSON."""
        with pytest.raises(CanonicalJSONError) as excinfo:
            decode_json(text)
        assert _errcode(excinfo) is Codes.NOT_JSON

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "  ",
            "{",
            '{"a"}',
            "{'a': 1}",
            "[1,]",
            "{a: 1}",
            '"a\x01"',
            '"\\x"',
            "01",
            "tru",
            '{"a":1,}',
            "]",
            '"unterminated',
        ],
    )
    def test_malformed_rejected(self, text: str) -> None:
        """Syntactically invalid JSON is M_NOT_JSON."""
        with pytest.raises(CanonicalJSONError) as excinfo:
            decode_json(text)
        assert _errcode(excinfo) is Codes.NOT_JSON

    @pytest.mark.parametrize("data", [None, 1, {"a": 1}, ["x"]])
    def test_wrong_input_type_is_caller_error(self, data: Any) -> None:
        """Passing neither bytes nor str is a LocalProtocolError (our bug, not the peer's)."""
        with pytest.raises(LocalProtocolError):
            decode_json(data)

    def test_errors_do_not_echo_content(self) -> None:
        """Error messages never repeat the document's contents (it may hold secrets)."""
        for body in (
            b'{"password": "hunter2", "n": 1.5}',
            b'{"password": "hunter2",',
            b'{"password": "hunter2", "password": 1}',
        ):
            with pytest.raises(CanonicalJSONError) as excinfo:
                decode_json(body)
            assert "hunter2" not in str(excinfo.value)
            assert "hunter2" not in json.dumps(excinfo.value.to_json())

    def test_object_required(self) -> None:
        """decode_json_object returns dicts and refuses other top-level values with M_BAD_JSON."""
        assert decode_json_object(b'{"a": 1}') == {"a": 1}
        for text in ("[]", '"s"', "1", "null", "true"):
            with pytest.raises(CanonicalJSONError) as excinfo:
                decode_json_object(text)
            assert _errcode(excinfo) is Codes.BAD_JSON

    def test_object_decoder_applies_strict_rules(self) -> None:
        """decode_json_object has the same strictness and options as decode_json."""
        with pytest.raises(CanonicalJSONError) as excinfo:
            decode_json_object(b"{")
        assert _errcode(excinfo) is Codes.NOT_JSON
        with pytest.raises(CanonicalJSONError):
            decode_json_object('{"a": [[1]]}', max_depth=2)
        assert decode_json_object(f'{{"n": {2**60}}}', strict_integers=False) == {"n": 2**60}


# --------------------------------------------------------------------------------------------
# The vectors locator (tests/sc_proto/vectors.py)


class TestVectorLocator:
    """load_vectors finds the shared vectors, and fails rather than skips in CI."""

    def test_missing_dir_fails_in_ci(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """With CI=true a missing vectors directory is a failure."""
        monkeypatch.setattr(vectors, "DEFAULT_VECTORS_DIR", tmp_path / "absent")
        monkeypatch.delenv(vectors.ENV_VAR, raising=False)
        monkeypatch.setenv("CI", "true")
        with pytest.raises(pytest.fail.Exception):
            vectors.load_vectors("canonical_json")

    def test_missing_dir_skips_outside_ci(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """Outside CI a missing vectors directory skips, and vector_params yields nothing."""
        monkeypatch.setattr(vectors, "DEFAULT_VECTORS_DIR", tmp_path / "absent")
        monkeypatch.delenv(vectors.ENV_VAR, raising=False)
        monkeypatch.delenv("CI", raising=False)
        with pytest.raises(pytest.skip.Exception):
            vectors.load_vectors("canonical_json")
        assert vectors.vector_params("canonical_json") == []

    def test_env_var_fallback(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """SC_CONFORMANCE_DIR is used when the default location is missing; count is checked."""
        monkeypatch.setattr(vectors, "DEFAULT_VECTORS_DIR", tmp_path / "absent")
        monkeypatch.setenv(vectors.ENV_VAR, str(tmp_path))
        (tmp_path / "x.json").write_text('{"count": 1, "vectors": [{"id": "x/1"}]}', encoding="utf-8")
        assert vectors.load_vectors("x") == [{"id": "x/1"}]
        assert vectors.load_vectors("x.json") == [{"id": "x/1"}]
        (tmp_path / "bad.json").write_text('{"count": 2, "vectors": [{"id": "x/1"}]}', encoding="utf-8")
        with pytest.raises(pytest.fail.Exception):
            vectors.load_vectors("bad")
        with pytest.raises(pytest.fail.Exception):
            vectors.load_vectors("nonexistent")

    def test_all_canonical_vectors_present(self) -> None:
        """The canonical JSON file holds its advertised 36 vectors (none silently dropped)."""
        assert len(vectors.load_vectors("canonical_json")) >= 36


class AllowFloatsTests:
    """decode_json(allow_floats=True): floats for Client-Server bodies, everything else still strict."""

    def test_floats_accepted_only_when_allowed(self) -> None:
        assert decode_json(b'{"a": 1.5, "b": 2e3}', allow_floats=True) == {"a": 1.5, "b": 2000.0}
        with pytest.raises(CanonicalJSONError):
            decode_json(b'{"a": 1.5}')

    def test_other_rules_still_apply(self) -> None:
        for bad in (b'{"a": NaN}', b'{"a": Infinity}', b'{"a": 1, "a": 2}', b'{"a": 9007199254740992}'):
            with pytest.raises(CanonicalJSONError):
                decode_json(bad, allow_floats=True)

    def test_decode_json_object_passes_the_flag(self) -> None:
        assert decode_json_object(b'{"x": 0.25}', allow_floats=True) == {"x": 0.25}
