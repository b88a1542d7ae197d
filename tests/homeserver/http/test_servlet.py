"""Tests for homeserver.http.servlet: JSON bodies, query parameters and body fields."""

from __future__ import annotations

import io
from typing import Any

import pytest
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from homeserver.http import servlet
from homeserver.http.server import JsonResource
from homeserver.http.servlet import (
    optional_bool,
    optional_int,
    optional_object,
    optional_str,
    optional_str_list,
    parse_boolean,
    parse_integer,
    parse_json_object_from_request,
    parse_json_value_from_request,
    parse_string,
    parse_strings,
    require_bool,
    require_int,
    require_object,
    require_str,
    require_str_list,
)
from sc_proto.errors import CanonicalJSONError, Codes, MatrixError
from tests.unittest import HomeserverTestCase


def fake_request(args: dict[bytes, list[bytes]] | None = None, body: bytes = b"") -> Request:
    request = Request(DummyChannel())
    request.args = args or {}
    request.content = io.BytesIO(body)
    return request


def assert_error(error: pytest.ExceptionInfo[MatrixError], code: Codes, status: int = 400) -> None:
    assert error.value.http_status == status
    assert error.value.errcode == code


class JsonBodyOverHttpTests(HomeserverTestCase):
    """Malformed bodies through the real Site give 400 M_NOT_JSON / M_BAD_JSON."""

    def register_servlets(self, resource: JsonResource) -> None:
        async def parse(request: Request) -> tuple[int, dict[str, Any]]:
            body = parse_json_object_from_request(request)
            return 200, {"got": body, "name": require_str(body, "name") if "name" in body else None}

        async def optional(request: Request) -> tuple[int, dict[str, Any]]:
            return 200, {"got": parse_json_object_from_request(request, allow_empty=True)}

        resource.register("POST", "/parse", parse)
        resource.register("POST", "/optional", optional)

    def post(self, path: str, body: bytes) -> Any:
        return self.make_request("POST", path, body)

    def test_valid_object(self) -> None:
        """A JSON object is parsed (non-ASCII included)."""
        channel = self.post("/parse", '{"a": [1, "é"]}'.encode())
        self.assertEqual(channel.code, 200)
        self.assertEqual(channel.json_body["got"], {"a": [1, "é"]})

    def test_malformed_bodies(self) -> None:
        """Malformed JSON, non-objects, invalid UTF-8 and empty bodies are M_NOT_JSON."""
        for body in (b"{", b"[1, 2]", b'"str"', b"null", b"\xff\xfe{}", b"", b"   ", b"{} x"):
            with self.subTest(body=body):
                channel = self.post("/parse", body)
                self.assertEqual(channel.code, 400)
                self.assertEqual(channel.json_body["errcode"], "M_NOT_JSON")

    def test_json_that_matrix_forbids(self) -> None:
        """NaN, duplicate keys, huge integers and deep nesting are 400 M_BAD_JSON."""
        for body in (
            b'{"a": NaN}',
            b'{"a": Infinity}',
            b'{"a": 1, "a": 2}',
            b'{"a": 9007199254740992}',
            b'{"a": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        ):
            with self.subTest(body=body[:30]):
                channel = self.post("/parse", body)
                self.assertEqual(channel.code, 400)
                self.assertEqual(channel.json_body["errcode"], "M_BAD_JSON")

    def test_floats_are_accepted_in_client_bodies(self) -> None:
        """Client bodies may carry floats (account data, to-device); only signed events refuse them."""
        channel = self.post("/parse", b'{"name": "x", "ratio": 1.5}')
        self.assertEqual(channel.code, 200, channel.json_body)

    def test_wrong_field_type(self) -> None:
        """A field of the wrong type is a 400 naming the field."""
        channel = self.post("/parse", b'{"name": 5}')
        self.assertEqual(channel.code, 400)
        self.assertEqual(channel.json_body["errcode"], "M_INVALID_PARAM")
        self.assertIn("name", channel.json_body["error"])

    def test_empty_body_allowed_when_optional(self) -> None:
        """allow_empty turns an empty body into {} but still rejects garbage."""
        self.assertEqual(self.post("/optional", b"").json_body, {"got": {}})
        self.assertEqual(self.post("/optional", b"{}").json_body, {"got": {}})
        self.assertEqual(self.post("/optional", b"[]").code, 400)


class DecodeErrorMappingTests(SynchronousTestCase):
    """Whatever the strict decoder raises becomes a 400 with a JSON errcode."""

    def test_other_errcodes_become_not_json(self) -> None:
        """A decoder error with an unrelated errcode is reported as M_NOT_JSON."""

        def odd(body: bytes, **kwargs: Any) -> Any:
            raise CanonicalJSONError("odd", Codes.FORBIDDEN)

        self.patch(servlet, "decode_json", odd)
        with pytest.raises(MatrixError) as error:
            servlet.decode_json_body(b"{}")
        assert_error(error, Codes.NOT_JSON)

    def test_value_errors_become_not_json(self) -> None:
        """A stray ValueError or RecursionError is reported as M_NOT_JSON, never a 500."""
        for exc in (ValueError("bad"), RecursionError()):

            def broken(body: bytes, exc: BaseException = exc, **kwargs: Any) -> Any:
                raise exc

            self.patch(servlet, "decode_json", broken)
            with pytest.raises(MatrixError) as error:
                servlet.decode_json_body(b"{}")
            assert_error(error, Codes.NOT_JSON)


class JsonValueTests(SynchronousTestCase):
    """parse_json_value_from_request."""

    def test_any_value(self) -> None:
        """Non-object values are returned as they are."""
        self.assertEqual(parse_json_value_from_request(fake_request(body=b"[1]")), [1])
        self.assertIsNone(parse_json_value_from_request(fake_request(), allow_empty=True))

    def test_empty_not_allowed(self) -> None:
        """An empty body fails unless allowed."""
        with pytest.raises(MatrixError) as error:
            parse_json_value_from_request(fake_request())
        assert_error(error, Codes.NOT_JSON)

    def test_no_content_at_all(self) -> None:
        """A request without a content file counts as empty."""
        request = fake_request()
        request.content = None
        self.assertEqual(parse_json_object_from_request(request, allow_empty=True), {})


class QueryParameterTests(SynchronousTestCase):
    """parse_string / parse_strings / parse_integer / parse_boolean."""

    def test_parse_string(self) -> None:
        """Present, absent, default, required and allowed values."""
        request = fake_request({b"dir": [b"b", b"f"], b"name": ["é".encode()]})
        self.assertEqual(parse_string(request, "dir"), "b")
        self.assertEqual(parse_string(request, "name"), "é")
        self.assertIsNone(parse_string(request, "missing"))
        self.assertEqual(parse_string(request, "missing", default="x"), "x")
        self.assertEqual(parse_string(request, "dir", allowed_values={"b", "f"}), "b")
        with pytest.raises(MatrixError) as error:
            parse_string(request, "missing", required=True)
        assert_error(error, Codes.MISSING_PARAM)
        with pytest.raises(MatrixError) as error:
            parse_string(request, "dir", allowed_values={"f"})
        assert_error(error, Codes.INVALID_PARAM)

    def test_parse_string_invalid_utf8(self) -> None:
        """Undecodable values are M_INVALID_PARAM."""
        request = fake_request({b"x": [b"\xff"]})
        with pytest.raises(MatrixError) as error:
            parse_string(request, "x")
        assert_error(error, Codes.INVALID_PARAM)
        with pytest.raises(MatrixError):
            parse_strings(request, "x")

    def test_parse_strings(self) -> None:
        """Repeated parameters are all returned."""
        request = fake_request({b"a": [b"1", b"2"]})
        self.assertEqual(parse_strings(request, "a"), ["1", "2"])
        self.assertEqual(parse_strings(request, "b"), [])

    def test_parse_integer(self) -> None:
        """Decimal integers with bounds; everything else is M_INVALID_PARAM."""
        request = fake_request({b"limit": [b"10"], b"neg": [b"-3"]})
        self.assertEqual(parse_integer(request, "limit"), 10)
        self.assertEqual(parse_integer(request, "neg"), -3)
        self.assertEqual(parse_integer(request, "missing", default=7), 7)
        self.assertIsNone(parse_integer(request, "missing"))
        self.assertEqual(parse_integer(request, "limit", minimum=0, maximum=10), 10)
        with pytest.raises(MatrixError) as error:
            parse_integer(request, "missing", required=True)
        assert_error(error, Codes.MISSING_PARAM)
        for bad in (b"", b"1.5", b"abc", b"1e3", b" 1", b"\xd9\xa3", b"-", b"99999999999999999", b"0x10"):
            with self.subTest(value=bad), pytest.raises(MatrixError) as error:
                parse_integer(fake_request({b"n": [bad]}), "n")
            assert_error(error, Codes.INVALID_PARAM)
        with pytest.raises(MatrixError):
            parse_integer(request, "limit", maximum=9)
        with pytest.raises(MatrixError):
            parse_integer(request, "neg", minimum=0)

    def test_parse_integer_range(self) -> None:
        """Integers beyond the JSON-safe range are refused."""
        with pytest.raises(MatrixError):
            parse_integer(fake_request({b"n": [b"9007199254740992"]}), "n")
        self.assertEqual(parse_integer(fake_request({b"n": [b"9007199254740991"]}), "n"), 2**53 - 1)

    def test_parse_boolean(self) -> None:
        """Only 'true' and 'false' are booleans."""
        request = fake_request({b"t": [b"true"], b"f": [b"false"], b"bad": [b"1"]})
        self.assertTrue(parse_boolean(request, "t"))
        self.assertFalse(parse_boolean(request, "f"))
        self.assertIsNone(parse_boolean(request, "missing"))
        self.assertTrue(parse_boolean(request, "missing", default=True))
        with pytest.raises(MatrixError) as error:
            parse_boolean(request, "bad")
        assert_error(error, Codes.INVALID_PARAM)
        with pytest.raises(MatrixError) as error:
            parse_boolean(request, "missing", required=True)
        assert_error(error, Codes.MISSING_PARAM)


class BodyFieldTests(SynchronousTestCase):
    """require_* / optional_* validators."""

    body: dict[str, Any] = {
        "s": "x",
        "i": 3,
        "b": True,
        "o": {"k": 1},
        "l": ["a", "b"],
        "n": None,
        "big": 2**60,
    }

    def check(self, func: Any, key: str, code: Codes, *args: Any) -> None:
        with pytest.raises(MatrixError) as error:
            func(self.body, key, *args)
        assert_error(error, code)

    def test_required_fields(self) -> None:
        """Each require_* returns the value, or 400 for missing / wrong type."""
        self.assertEqual(require_str(self.body, "s"), "x")
        self.assertEqual(require_int(self.body, "i"), 3)
        self.assertIs(require_bool(self.body, "b"), True)
        self.assertEqual(require_object(self.body, "o"), {"k": 1})
        self.assertEqual(require_str_list(self.body, "l"), ["a", "b"])
        for func, wrong_key in (
            (require_str, "i"),
            (require_int, "s"),
            (require_int, "b"),  # booleans are not integers
            (require_int, "big"),
            (require_bool, "i"),
            (require_object, "l"),
            (require_str_list, "o"),
            (require_str, "n"),
        ):
            with self.subTest(func=func.__name__, key=wrong_key):
                self.check(func, wrong_key, Codes.INVALID_PARAM)
                self.check(func, "absent", Codes.MISSING_PARAM)

    def test_int_bounds(self) -> None:
        """Integer fields honour minimum and maximum."""
        self.check(require_int, "i", Codes.INVALID_PARAM, 4)
        self.check(require_int, "i", Codes.INVALID_PARAM, None, 2)
        self.assertEqual(optional_int(self.body, "i", None, 0, 3), 3)

    def test_optional_fields(self) -> None:
        """optional_* return the default for absent or null, and 400 for the wrong type."""
        self.assertEqual(optional_str(self.body, "s"), "x")
        self.assertEqual(optional_str(self.body, "n", "d"), "d")
        self.assertEqual(optional_int(self.body, "absent", 5), 5)
        self.assertIs(optional_bool(self.body, "b"), True)
        self.assertIsNone(optional_bool(self.body, "absent"))
        self.assertEqual(optional_object(self.body, "o"), {"k": 1})
        self.assertIsNone(optional_object(self.body, "n"))
        self.assertEqual(optional_str_list(self.body, "l"), ["a", "b"])
        self.assertIsNone(optional_str_list(self.body, "absent"))
        for func, wrong_key in (
            (optional_str, "i"),
            (optional_int, "s"),
            (optional_bool, "s"),
            (optional_object, "s"),
            (optional_str_list, "s"),
        ):
            with self.subTest(func=func.__name__):
                self.check(func, wrong_key, Codes.INVALID_PARAM)


class ParseRoomIdTests:
    """parse_room_id: the one room-ID check every endpoint uses."""

    def test_valid_forms(self) -> None:
        from homeserver.http.params import parse_room_id

        assert parse_room_id("!abc:example.org") == "!abc:example.org"
        v12 = "!" + "A" * 43
        assert parse_room_id(v12) == v12

    def test_bad_inputs(self) -> None:
        from homeserver.http.params import parse_room_id

        for bad in ("", "abc:example.org", "#alias:example.org", "!:", 5, None, "!a" * 200):
            with pytest.raises(MatrixError) as info:
                parse_room_id(bad)
            assert (info.value.http_status, info.value.errcode) == (400, Codes.INVALID_PARAM)
