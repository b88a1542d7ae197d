"""Tests for sc_proto.crypto: keys, JSON and event signatures, X-Matrix request authentication."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sc_proto.crypto.keys import (
    decode_base64,
    decode_signing_key_base64,
    decode_verify_key_base64,
    decode_verify_key_bytes,
    encode_base64,
    encode_signing_key_base64,
    encode_verify_key_base64,
    generate_signing_key,
    get_key_id,
    get_verify_key,
    is_signing_algorithm_supported,
    parse_key_id,
    read_signing_keys,
    signing_key_from_seed,
    write_signing_keys,
)
from sc_proto.crypto.signing import (
    XMatrixAuth,
    build_request_json,
    parse_x_matrix_header,
    sign_event,
    sign_json,
    sign_request,
    verify_event_signature,
    verify_json,
    verify_request,
)
from sc_proto.errors import CanonicalJSONError, Codes, InvalidEventError, SignatureError
from sc_proto.events.hashes import check_content_hash
from sc_proto.events.redaction import redact
from sc_proto.room_versions import KNOWN_ROOM_VERSIONS, RoomVersions

# The spec's test key (appendices, "Cryptographic Test Vectors").
SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
KEY = decode_signing_key_base64("ed25519", "1", SPEC_SEED)
VERIFY = get_verify_key(KEY)
OTHER_KEY = signing_key_from_seed(b"\x01" * 32, "1")


# --- base64 and keys ----------------------------------------------------------------------


def test_base64_round_trip_and_leniency() -> None:
    """Unpadded output; padded or unpadded, standard or URL-safe input decodes."""
    assert encode_base64(b"f") == "Zg" and encode_base64(b"\xfb\xff", urlsafe=True) == "-_8"
    assert decode_base64("Zg") == decode_base64("Zg==") == b"f"
    assert decode_base64("-_8", urlsafe=True) == b"\xfb\xff"
    for bad in ("Z", "Zg===", "a b", "-_8", "Zm9v!", 5, None):
        with pytest.raises(SignatureError):
            decode_base64(bad)


def test_spec_key_and_key_ids() -> None:
    """The spec seed's public key checks the spec's signature; key IDs are ``alg:version``."""
    spec_signed = {
        "signatures": {
            "domain": {
                "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
            }
        }
    }
    verify_json(spec_signed, "domain", VERIFY)
    assert len(encode_verify_key_base64(VERIFY)) == 43
    assert get_key_id(KEY) == get_key_id(VERIFY) == "ed25519:1"
    # The spec's seed string has non-zero trailing bits; the bytes are what matter.
    assert decode_base64(encode_signing_key_base64(KEY)) == decode_base64(SPEC_SEED)
    assert parse_key_id("ed25519:a_B9") == ("ed25519", "a_B9")
    assert is_signing_algorithm_supported("ed25519:x") and not is_signing_algorithm_supported("curve:x")
    for bad in ("ed25519", "ed25519:", ":abc", "ed25519:a-b", "ed25519:a:b", 5):
        with pytest.raises(SignatureError):
            parse_key_id(bad)
    with pytest.raises(SignatureError):
        get_key_id(object())  # type: ignore[arg-type]


def test_generate_signing_key() -> None:
    """Generated keys are distinct, carry their version, and reject bad versions."""
    a, b = generate_signing_key("auto1"), generate_signing_key("auto1")
    assert get_key_id(a) == "ed25519:auto1"
    assert encode_signing_key_base64(a) != encode_signing_key_base64(b)
    with pytest.raises(SignatureError):
        generate_signing_key("bad version")


def test_signing_key_file_round_trip() -> None:
    """write_signing_keys / read_signing_keys round-trip; comments and blank lines are skipped."""
    keys = [KEY, generate_signing_key("b_2")]
    text = write_signing_keys(keys)
    assert text.splitlines()[0] == f"ed25519 1 {encode_signing_key_base64(KEY)}"
    again = read_signing_keys("# comment\n\n" + text)
    assert [get_key_id(k) for k in again] == ["ed25519:1", "ed25519:b_2"]
    assert [encode_signing_key_base64(k) for k in again] == [encode_signing_key_base64(k) for k in keys]
    assert len(read_signing_keys(text.splitlines())) == 2


@pytest.mark.parametrize(
    "line",
    [
        "ed25519 1",
        "ed25519 1 abc extra",
        f"rsa 1 {SPEC_SEED}",
        f"ed25519 bad-version {SPEC_SEED}",
        "ed25519 1 !!!!",
        "ed25519 1 AAAA",
    ],
)
def test_read_signing_keys_errors(line: str) -> None:
    """Malformed key lines raise SignatureError naming the line, never the key."""
    with pytest.raises(SignatureError) as e:
        read_signing_keys("# ok\n" + line)
    assert "line 2" in e.value.message and SPEC_SEED not in e.value.message


def test_verify_key_decoding() -> None:
    """Verify keys decode from base64 or bytes; bad algorithms and lengths raise."""
    key = decode_verify_key_base64("ed25519", "1", encode_verify_key_base64(VERIFY))
    assert key.encode() == VERIFY.encode() and get_key_id(key) == "ed25519:1"
    with pytest.raises(SignatureError):
        decode_verify_key_base64("curve25519", "1", encode_verify_key_base64(VERIFY))
    with pytest.raises(SignatureError):
        decode_verify_key_bytes("ed25519:1", b"short")
    with pytest.raises(SignatureError):
        signing_key_from_seed(b"short", "1")


# --- JSON signatures ------------------------------------------------------------------------


def test_sign_json_spec_example() -> None:
    """Signing ``{}`` with the spec key gives the spec's signature."""
    assert sign_json({}, "domain", KEY) == {
        "signatures": {
            "domain": {
                "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
            }
        }
    }


def test_sign_json_copies_and_merges() -> None:
    """The input is untouched; unsigned is kept but not signed; other signatures stay."""
    obj = {"a": [1], "unsigned": {"age": 1}, "signatures": {"other": {"ed25519:x": "c2ln"}}}
    before = copy.deepcopy(obj)
    signed = sign_json(obj, "domain", KEY)
    assert obj == before
    assert signed["unsigned"] == {"age": 1} and signed["signatures"]["other"] == {"ed25519:x": "c2ln"}
    signed["a"].append(2)
    assert obj["a"] == [1]
    verify_json(dict(signed, a=[1], unsigned={"changed": True}), "domain", VERIFY)
    twice = sign_json(sign_json({}, "domain", KEY), "domain", OTHER_KEY, key_id="ed25519:2")
    assert set(twice["signatures"]["domain"]) == {"ed25519:1", "ed25519:2"}


def test_sign_json_bad_inputs() -> None:
    """Non-objects, malformed signatures and non-canonical values raise typed errors."""
    with pytest.raises(SignatureError):
        sign_json([], "d", KEY)  # type: ignore[arg-type]
    with pytest.raises(SignatureError):
        sign_json({"signatures": "x"}, "d", KEY)
    with pytest.raises(SignatureError):
        sign_json({}, "d", KEY, key_id="nokeyid")
    with pytest.raises(CanonicalJSONError):
        sign_json({"f": 1.5}, "d", KEY)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda o: o.pop("signatures"),
        lambda o: o.update(signatures="x"),
        lambda o: o["signatures"].pop("domain"),
        lambda o: o["signatures"].update(domain="x"),
        lambda o: o["signatures"]["domain"].update({"ed25519:1": "!!!"}),
        lambda o: o["signatures"]["domain"].update({"ed25519:1": "c2ln"}),
        lambda o: o["signatures"]["domain"].update({"ed25519:1": 7}),
        lambda o: o["signatures"]["domain"].update({"ed25519:1": encode_base64(b"\0" * 64)}),
        lambda o: o.update(extra=1),
        lambda o: o.update(f=1.5),
    ],
)
def test_verify_json_failures(mutate: Any) -> None:
    """Missing, malformed or wrong signatures and tampered objects raise SignatureError."""
    signed = sign_json({"k": "v"}, "domain", KEY)
    mutate(signed)
    with pytest.raises(SignatureError):
        verify_json(signed, "domain", VERIFY)


def test_verify_json_other_key_and_server() -> None:
    """A signature does not verify under another key, key ID or server name."""
    signed = sign_json({"k": "v"}, "domain", KEY)
    with pytest.raises(SignatureError):
        verify_json(signed, "domain", get_verify_key(OTHER_KEY))
    with pytest.raises(SignatureError):
        verify_json(signed, "other", VERIFY)
    with pytest.raises(SignatureError):
        verify_json(signed, "domain", VERIFY, key_id="ed25519:2")
    with pytest.raises(SignatureError):
        verify_json([], "domain", VERIFY)  # type: ignore[arg-type]


json_scalars = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)
json_objects = st.dictionaries(
    st.text(max_size=6).filter(lambda k: k not in ("signatures", "unsigned")), json_values, max_size=5
)


@settings(max_examples=50, deadline=None)
@given(json_objects)
def test_verify_sign_round_trip(obj: dict[str, Any]) -> None:
    """verify(sign(x)) holds for any JSON object."""
    verify_json(sign_json(obj, "domain", KEY), "domain", VERIFY)


@settings(max_examples=50, deadline=None)
@given(json_objects, st.data())
def test_tampering_fails(obj: dict[str, Any], data: st.DataObject) -> None:
    """Changing a value, adding a key, or checking with another key makes verification fail."""
    signed = sign_json(obj, "domain", KEY)
    with pytest.raises(SignatureError):
        verify_json(signed, "domain", get_verify_key(OTHER_KEY))
    added = dict(signed)
    added[
        data.draw(st.text(max_size=6).filter(lambda k: k not in signed and k != "unsigned"), label="new key")
    ] = 0
    with pytest.raises(SignatureError):
        verify_json(added, "domain", VERIFY)
    if obj:
        key = data.draw(st.sampled_from(sorted(obj)), label="changed key")
        new_value = data.draw(json_values.filter(lambda v: v != obj[key]), label="new value")
        with pytest.raises(SignatureError):
            verify_json(dict(signed, **{key: new_value}), "domain", VERIFY)


# --- event signatures -----------------------------------------------------------------------


def _message(room_version_id: str) -> dict[str, Any]:
    pdu: dict[str, Any] = {
        "type": "m.room.message",
        "sender": "@a:domain",
        "room_id": "!r:domain",
        "depth": 3,
        "content": {"body": "hi"},
        "origin_server_ts": 5,
        "prev_events": [],
        "auth_events": [],
        "unsigned": {"age": 1},
    }
    if KNOWN_ROOM_VERSIONS[room_version_id].event_format.value == 1:
        pdu["event_id"] = "$e:domain"
    return pdu


@pytest.mark.parametrize("version_id", list(KNOWN_ROOM_VERSIONS))
def test_sign_and_verify_event(version_id: str) -> None:
    """Signed events verify in full and redacted; content edits break only the content hash."""
    room_version = KNOWN_ROOM_VERSIONS[version_id]
    pdu = _message(version_id)
    signed = sign_event(pdu, room_version, "domain", KEY)
    assert "hashes" not in pdu and "signatures" not in pdu
    assert check_content_hash(signed)
    verify_event_signature(signed, room_version, "domain", VERIFY)
    verify_event_signature(redact(signed, room_version), room_version, "domain", VERIFY)
    edited = dict(signed, content={"body": "edited"})
    verify_event_signature(edited, room_version, "domain", VERIFY)
    assert not check_content_hash(edited)
    with pytest.raises(SignatureError):
        verify_event_signature(dict(signed, depth=4), room_version, "domain", VERIFY)
    with pytest.raises(SignatureError):
        verify_event_signature(signed, room_version, "other", VERIFY)


def test_sign_event_keeps_other_hashes_and_signatures() -> None:
    """Existing hash algorithms and other servers' signatures survive signing."""
    pdu = dict(_message("10"), hashes={"sha512": "x"}, signatures={"other": {"ed25519:1": "c2ln"}})
    signed = sign_event(pdu, RoomVersions.V10, "domain", KEY)
    assert signed["hashes"]["sha512"] == "x" and "sha256" in signed["hashes"]
    assert signed["signatures"]["other"] == {"ed25519:1": "c2ln"}


def test_sign_event_bad_inputs() -> None:
    """Non-objects and malformed hashes raise InvalidEventError; verify raises SignatureError."""
    with pytest.raises(InvalidEventError):
        sign_event([], RoomVersions.V10, "d", KEY)  # type: ignore[arg-type]
    with pytest.raises(InvalidEventError):
        sign_event(dict(_message("10"), hashes=[]), RoomVersions.V10, "d", KEY)
    with pytest.raises(InvalidEventError):
        sign_event(dict(_message("10"), content={"f": 1.5}), RoomVersions.V10, "d", KEY)
    with pytest.raises(SignatureError):
        verify_event_signature("x", RoomVersions.V10, "d", VERIFY)  # type: ignore[arg-type]


def test_old_room_versions_sign_lenient_numbers() -> None:
    """Rooms v1-v5 sign and verify events whose essential keys hold huge integers."""
    pdu = dict(_message("5"), depth=2**60)
    signed = sign_event(pdu, RoomVersions.V5, "domain", KEY)
    verify_event_signature(signed, RoomVersions.V5, "domain", VERIFY)


# --- X-Matrix -------------------------------------------------------------------------------

URI = "/_matrix/federation/v1/send/1?x=y"
BODY: dict[str, list[Any]] = {"pdus": [], "edus": []}


def test_request_json_shape() -> None:
    """The signed request object holds method, uri, origin, destination and (if any) content."""
    assert build_request_json("GET", "/a", "o", "d") == {
        "method": "GET",
        "uri": "/a",
        "origin": "o",
        "destination": "d",
    }
    assert build_request_json("PUT", "/a", "o", "d", {})["content"] == {}


def test_sign_and_verify_request() -> None:
    """A signed request verifies from the raw header and from the parsed form."""
    header = sign_request(
        method="PUT",
        uri=URI,
        origin="origin.example:8448",
        destination="dest.example",
        content=BODY,
        signing_key=KEY,
    )
    assert header.startswith(
        'X-Matrix origin="origin.example:8448",destination="dest.example",key="ed25519:1",sig="'
    )
    auth = parse_x_matrix_header(header)
    assert auth.origin == "origin.example:8448" and auth.destination == "dest.example"
    assert auth.key_id == "ed25519:1"
    assert (
        verify_request(
            method="PUT", uri=URI, destination="dest.example", content=BODY, auth=header, verify_key=VERIFY
        )
        == auth
    )
    verify_request(
        method="PUT",
        uri=URI,
        destination="dest.example",
        content=BODY,
        auth=header.encode("ascii"),
        verify_key=VERIFY,
    )
    no_body = sign_request(method="GET", uri="/k", origin="o", destination="d", content=None, signing_key=KEY)
    verify_request(method="GET", uri="/k", destination="d", content=None, auth=no_body, verify_key=VERIFY)


@pytest.mark.parametrize(
    "change",
    [
        {"method": "POST"},
        {"uri": "/_matrix/federation/v1/send/2"},
        {"destination": "evil.example"},
        {"content": {"pdus": [1], "edus": []}},
        {"content": None},
        {"verify_key": get_verify_key(OTHER_KEY)},
    ],
)
def test_verify_request_rejects_changes(change: dict[str, Any]) -> None:
    """Any change to the signed parts, the destination, or the key fails with 401."""
    header = sign_request(
        method="PUT", uri=URI, origin="o", destination="dest.example", content=BODY, signing_key=KEY
    )
    kwargs: dict[str, Any] = dict(
        method="PUT", uri=URI, destination="dest.example", content=BODY, auth=header, verify_key=VERIFY
    )
    kwargs.update(change)
    with pytest.raises(SignatureError) as e:
        verify_request(**kwargs)
    assert e.value.http_status == 401 and e.value.errcode is Codes.UNAUTHORIZED


def test_verify_request_without_destination_param() -> None:
    """Headers from older servers without ``destination`` verify against our own name."""
    header = sign_request(method="GET", uri="/a", origin="o", destination="me", content=None, signing_key=KEY)
    auth = parse_x_matrix_header(header)
    legacy = XMatrixAuth(auth.origin, None, auth.key_id, auth.signature)
    verify_request(method="GET", uri="/a", destination="me", content=None, auth=legacy, verify_key=VERIFY)
    with pytest.raises(SignatureError):
        verify_request(
            method="GET", uri="/a", destination="you", content=None, auth=legacy, verify_key=VERIFY
        )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('X-Matrix origin="a",destination="b",key="ed25519:1",sig="c2ln"', ("a", "b", "ed25519:1", "c2ln")),
        ("x-matrix ORIGIN=a , Key=ed25519:1 ,\tsig=c2ln", ("a", None, "ed25519:1", "c2ln")),
        ("X-Matrix ,origin=a, ,key=ed25519:1,,sig=c2ln,", ("a", None, "ed25519:1", "c2ln")),
        (
            "X-MATRIX   origin=a.example:8448,key=ed25519:1,sig=c2ln",
            ("a.example:8448", None, "ed25519:1", "c2ln"),
        ),
        (
            'X-Matrix origin="a,b",key="ed25519:1",sig="c2ln",future="x, y"',
            ("a,b", None, "ed25519:1", "c2ln"),
        ),
        (
            'X-Matrix origin="a\\"b\\\\",key="ed25519:1",signature="c2ln"',
            ('a"b\\', None, "ed25519:1", "c2ln"),
        ),
        (
            'X-Matrix origin="[::1]:8448",key="ed25519:1",sig="c2ln"',
            ("[::1]:8448", None, "ed25519:1", "c2ln"),
        ),
    ],
)
def test_parse_x_matrix_variants(header: str, expected: tuple[Any, ...]) -> None:
    """Scheme and names are case-insensitive; quoted/unquoted values, OWS, commas in quotes, escapes."""
    auth = parse_x_matrix_header(header)
    assert (auth.origin, auth.destination, auth.key_id, auth.signature) == expected


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer abc",
        "X-Matrix",
        "X-Matrix ",
        "X-Matrixorigin=a,key=ed25519:1,sig=c2ln",
        "X-Matrix key=ed25519:1,sig=c2ln",
        "X-Matrix origin=a,sig=c2ln",
        "X-Matrix origin=a,key=ed25519:1",
        "X-Matrix origin=a,key=nocolon,sig=c2ln",
        "X-Matrix origin=a,origin=b,key=ed25519:1,sig=c2ln",
        'X-Matrix origin="a,key=ed25519:1,sig=c2ln',
        'X-Matrix origin="a\\',
        "X-Matrix origin=a key=ed25519:1,sig=c2ln",
        "X-Matrix origin=,key=ed25519:1,sig=c2ln",
        "X-Matrix =a,key=ed25519:1,sig=c2ln",
        "X-Matrix origin=a,key=ed25519:1,sig=x,signature=y",
        b"X-Matrix origin=\xff,key=ed25519:1,sig=c2ln",
    ],
)
def test_parse_x_matrix_rejects(header: str | bytes) -> None:
    """Malformed headers raise SignatureError (401 M_UNAUTHORIZED), never anything else."""
    with pytest.raises(SignatureError) as e:
        parse_x_matrix_header(header)
    assert e.value.http_status == 401 and e.value.errcode is Codes.UNAUTHORIZED


def test_parse_x_matrix_rejects_non_string() -> None:
    """A header that is not text raises SignatureError."""
    with pytest.raises(SignatureError):
        parse_x_matrix_header(None)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60) | st.binary(max_size=60))
def test_parse_x_matrix_never_crashes(header: str | bytes) -> None:
    """Arbitrary input either parses or raises SignatureError."""
    try:
        parse_x_matrix_header("X-Matrix " + header if isinstance(header, str) else header)
    except SignatureError:
        pass
