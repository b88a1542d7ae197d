"""Tests for sc_proto.events: hashes and IDs, redaction, validation, the builder and the model."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sc_proto.crypto.keys import get_verify_key, signing_key_from_seed
from sc_proto.crypto.signing import verify_event_signature
from sc_proto.errors import Codes, InvalidEventError, LocalProtocolError
from sc_proto.events.builder import build_event, finalise_event
from sc_proto.events.hashes import (
    check_content_hash,
    compute_content_hash,
    compute_event_id,
    compute_reference_hash,
    compute_room_id,
    content_hash_b64,
    encode_base64,
)
from sc_proto.events.model import Event
from sc_proto.events.redaction import redact
from sc_proto.events.validation import MAX_PDU_BYTES, validate_pdu
from sc_proto.json import encode_canonical_json
from sc_proto.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, RoomVersions

ALL_VERSIONS = list(KNOWN_ROOM_VERSIONS.values())
SEED = bytes(range(32))
KEY = signing_key_from_seed(SEED, "1")
SERVER = "example.org"


def make_pdu(room_version: RoomVersion, **overrides: Any) -> dict[str, Any]:
    """A valid, signed message event of ``room_version``, with top-level overrides."""
    pdu = build_event(
        room_version=room_version,
        room_id="!room:example.org",
        type="m.room.message",
        sender="@alice:example.org",
        content={"body": "hello", "msgtype": "m.text"},
        prev_event_ids=["$prev:example.org"],
        auth_event_ids=["$auth:example.org"],
        depth=5,
        origin_server_ts=1_700_000_000_000,
        origin=SERVER,
        event_id_localpart="abc",
    )
    pdu = finalise_event(pdu, room_version, SERVER, "ed25519:1", KEY).get_pdu_json()
    pdu.update(overrides)
    return pdu


# --- hashes and IDs -------------------------------------------------------------------------


def test_content_hash_ignores_unsigned_signatures_and_hashes() -> None:
    """The content hash does not cover ``unsigned``, ``signatures`` or ``hashes``."""
    pdu = make_pdu(RoomVersions.V10)
    other = dict(pdu, unsigned={"age": 5}, signatures={"x": {}}, hashes={"sha256": "zzz"})
    assert compute_content_hash(pdu) == compute_content_hash(other)
    assert len(compute_content_hash(pdu)) == 32


def test_content_hash_covers_content() -> None:
    """Changing the content changes the content hash."""
    pdu = make_pdu(RoomVersions.V10)
    assert content_hash_b64(pdu) != content_hash_b64(dict(pdu, content={"body": "bye"}))


def test_check_content_hash() -> None:
    """check_content_hash accepts the right hash (padded or not) and rejects anything else."""
    pdu = make_pdu(RoomVersions.V10)
    assert check_content_hash(pdu)
    assert check_content_hash(dict(pdu, hashes={"sha256": pdu["hashes"]["sha256"] + "="}))
    assert not check_content_hash(dict(pdu, content={"body": "tampered"}))
    assert not check_content_hash(dict(pdu, hashes={}))
    assert not check_content_hash(dict(pdu, hashes={"sha256": 5}))
    assert not check_content_hash(dict(pdu, hashes="nope"))
    assert not check_content_hash({k: v for k, v in pdu.items() if k != "hashes"})
    assert not check_content_hash("not an event")  # type: ignore[arg-type]
    assert not check_content_hash(dict(pdu, content={"x": 1.5}), RoomVersions.V10)


def test_event_id_alphabets() -> None:
    """v3 uses standard base64, v4+ URL-safe; both unpadded and derived from the reference hash."""
    for n in range(200):
        pdu = make_pdu(RoomVersions.V3, depth=n)
        ref = compute_reference_hash(pdu, RoomVersions.V3)
        std = "$" + encode_base64(ref)
        if "+" in std or "/" in std:
            break
    else:  # pragma: no cover - 200 tries without + or / is astronomically unlikely
        pytest.fail("no hash with + or / found")
    assert compute_event_id(pdu, RoomVersions.V3) == std
    url = compute_event_id(pdu, RoomVersions.V4)
    assert url == "$" + encode_base64(compute_reference_hash(pdu, RoomVersions.V4), urlsafe=True)
    assert "+" not in url and "/" not in url and "=" not in url and "=" not in std


def test_event_id_v1_is_the_field() -> None:
    """Rooms v1/v2 read the event ID from the PDU and require it."""
    pdu = make_pdu(RoomVersions.V1)
    assert compute_event_id(pdu, RoomVersions.V1) == "$abc:example.org"
    del pdu["event_id"]
    with pytest.raises(InvalidEventError):
        compute_event_id(pdu, RoomVersions.V2)


def test_event_id_ignores_non_essential_fields() -> None:
    """The reference hash covers only the redacted event: unsigned and message bodies don't count."""
    pdu = make_pdu(RoomVersions.V11)
    eid = compute_event_id(pdu, RoomVersions.V11)
    assert compute_event_id(dict(pdu, unsigned={"age": 1}), RoomVersions.V11) == eid
    assert compute_event_id(dict(pdu, signatures={}), RoomVersions.V11) == eid
    assert compute_event_id(dict(pdu, content={}), RoomVersions.V11) == eid
    assert compute_event_id(dict(pdu, depth=6), RoomVersions.V11) != eid


def test_compute_room_id_rules() -> None:
    """Room IDs come from v12 create events only."""
    create = build_event(
        room_version=RoomVersions.V12,
        room_id=None,
        type="m.room.create",
        sender="@a:x",
        content={},
        prev_event_ids=[],
        auth_event_ids=[],
        depth=1,
        origin_server_ts=1,
        state_key="",
    )
    room_id = compute_room_id(create, RoomVersions.V12)
    assert room_id == "!" + compute_event_id(create, RoomVersions.V12)[1:]
    with pytest.raises(LocalProtocolError):
        compute_room_id(create, RoomVersions.V11)
    with pytest.raises(InvalidEventError):
        compute_room_id(dict(create, type="m.room.member"), RoomVersions.V12)


def test_hash_functions_reject_non_objects() -> None:
    """Hashing something that is not an object raises InvalidEventError, nothing else."""
    bad: Any
    for bad in (None, [], "x", 5):
        with pytest.raises(InvalidEventError):
            compute_content_hash(bad)
        with pytest.raises(InvalidEventError):
            compute_event_id(bad, RoomVersions.V10)


def test_lenient_numbers_in_old_room_versions() -> None:
    """Rooms v1-v5 hash floats and huge integers; v6+ reject them."""
    pdu = make_pdu(RoomVersions.V5, content={"f": 1.5, "big": 2**60})
    assert len(compute_reference_hash(pdu, RoomVersions.V5)) == 32
    assert len(compute_content_hash(pdu)) == 32
    with pytest.raises(InvalidEventError):
        compute_content_hash(pdu, RoomVersions.V6)
    with pytest.raises(InvalidEventError):
        compute_event_id(dict(pdu, depth=2**60), RoomVersions.V6)


def test_unencodable_values_raise_invalid_event() -> None:
    """Values JSON cannot hold and lone surrogates raise InvalidEventError."""
    with pytest.raises(InvalidEventError):
        compute_content_hash({"content": {"x": object()}})
    with pytest.raises(InvalidEventError):
        compute_content_hash({"content": {"x": "\ud800"}})


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


json_scalars = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
event_types = st.sampled_from(
    [
        "m.room.create",
        "m.room.member",
        "m.room.join_rules",
        "m.room.power_levels",
        "m.room.history_visibility",
        "m.room.aliases",
        "m.room.redaction",
        "m.room.message",
        "m.room.topic",
    ]
)
content_keys = st.sampled_from(
    [
        "membership",
        "join_authorised_via_users_server",
        "third_party_invite",
        "creator",
        "join_rule",
        "allow",
        "ban",
        "events",
        "invite",
        "users",
        "aliases",
        "history_visibility",
        "redacts",
        "body",
        "signed",
        "other",
    ]
)
contents = st.dictionaries(content_keys | st.text(max_size=5), json_values, max_size=6)


@st.composite
def random_events(draw: st.DrawFn) -> dict[str, Any]:
    """Arbitrary event-like objects, including extra top-level keys and odd content types."""
    event: dict[str, Any] = {
        "type": draw(event_types),
        "content": draw(contents | json_values),
        "sender": "@a:b",
        "room_id": "!r:b",
        "depth": draw(st.integers(0, 100)),
        "origin": "b",
        "membership": "join",
        "prev_state": [],
        "unsigned": {"age": 1},
        "redacts": "$x",
        "hashes": {"sha256": "abc"},
        "signatures": {"b": {"ed25519:1": "sig"}},
    }
    event.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=3)))
    if isinstance(event.get("content"), dict) and draw(st.booleans()):
        event["content"]["third_party_invite"] = {"signed": draw(json_values), "display_name": "x"}
    return event


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_events(), st.sampled_from(ALL_VERSIONS))
def test_redaction_is_idempotent(event: dict[str, Any], room_version: RoomVersion) -> None:
    """redact(redact(e)) == redact(e) for every room version."""
    once = redact(event, room_version)
    assert redact(once, room_version) == once


@settings(max_examples=40, deadline=None)
@given(
    contents,
    st.integers(0, 2**40),
    st.sampled_from([v for v in ALL_VERSIONS if v.identifier not in ("1", "2")]),
)
def test_event_id_stable_under_key_reordering(
    content: dict[str, Any], seed: int, room_version: RoomVersion
) -> None:
    """Reordering keys at any depth never changes the event ID or content hash."""
    pdu = make_pdu(room_version, content=content)
    shuffled = _shuffled(copy.deepcopy(pdu), random.Random(seed))
    assert compute_event_id(shuffled, room_version) == compute_event_id(pdu, room_version)
    assert compute_content_hash(shuffled) == compute_content_hash(pdu)


# --- redaction ------------------------------------------------------------------------------


def _event(type_: str, content: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "content": content,
        "sender": "@a:b",
        "room_id": "!r:b",
        "origin": "b",
        "membership": "join",
        "prev_state": [],
        "unsigned": {"age": 1},
        "state_key": "",
        **extra,
    }


def test_redaction_top_level_keys_by_version() -> None:
    """v1-v10 keep origin/membership/prev_state; v11+ drop them; unknown keys always go."""
    event = _event("m.room.message", {"body": "x"}, extra_key=1, redacts="$x")
    old = redact(event, RoomVersions.V10)
    assert {"origin", "membership", "prev_state"} <= set(old)
    assert "extra_key" not in old and "unsigned" not in old and "redacts" not in old
    new = redact(event, RoomVersions.V11)
    assert not {"origin", "membership", "prev_state"} & set(new)
    assert new["content"] == {} and old["content"] == {}


@pytest.mark.parametrize(
    ("type_", "key", "absent_in", "present_in"),
    [
        ("m.room.aliases", "aliases", "6", "5"),
        ("m.room.join_rules", "allow", "7", "8"),
        ("m.room.member", "join_authorised_via_users_server", "8", "9"),
        ("m.room.power_levels", "invite", "10", "11"),
        ("m.room.redaction", "redacts", "10", "11"),
        ("m.room.create", "predecessor", "10", "11"),
    ],
)
def test_redaction_content_flags(type_: str, key: str, absent_in: str, present_in: str) -> None:
    """Each version-dependent content key survives from exactly the version that added it."""
    event = _event(type_, {key: "v", "junk": 1})
    assert key not in redact(event, KNOWN_ROOM_VERSIONS[absent_in])["content"]
    assert redact(event, KNOWN_ROOM_VERSIONS[present_in])["content"] == (
        {key: "v", "junk": 1} if type_ == "m.room.create" else {key: "v"}
    )


def test_redaction_third_party_invite_signed_only_v11() -> None:
    """v11+ keep only ``signed`` of ``third_party_invite``; earlier versions drop it all."""
    event = _event(
        "m.room.member",
        {"membership": "invite", "third_party_invite": {"signed": {"a": 1}, "display_name": "d"}},
    )
    assert redact(event, RoomVersions.V11)["content"] == {
        "membership": "invite",
        "third_party_invite": {"signed": {"a": 1}},
    }
    assert redact(event, RoomVersions.V10)["content"] == {"membership": "invite"}
    bad = _event("m.room.member", {"membership": "invite", "third_party_invite": "x"})
    assert redact(bad, RoomVersions.V11)["content"] == {"membership": "invite"}


def test_redaction_v12_create_drops_room_id() -> None:
    """A v12 create event's (invalid) room_id is not kept; v11 keeps it."""
    event = _event("m.room.create", {"room_version": "12"})
    assert "room_id" not in redact(event, RoomVersions.V12)
    assert redact(event, RoomVersions.V11)["room_id"] == "!r:b"
    assert redact(_event("m.room.member", {}), RoomVersions.V12)["room_id"] == "!r:b"


def test_redaction_copies_and_tolerates_bad_content() -> None:
    """The input is not modified nor shared, and non-object content becomes {}."""
    event = _event("m.room.power_levels", {"users": {"@a:b": 100}})
    before = copy.deepcopy(event)
    out = redact(event, RoomVersions.V10)
    out["content"]["users"]["@x:y"] = 1
    assert event == before
    assert redact(_event("m.room.member", "nope"), RoomVersions.V10)["content"] == {}  # type: ignore[arg-type]
    with pytest.raises(InvalidEventError):
        redact([], RoomVersions.V10)  # type: ignore[arg-type]


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize("room_version", ALL_VERSIONS, ids=lambda v: f"v{v.identifier}")
def test_valid_event_passes(room_version: RoomVersion) -> None:
    """A built and finalised event validates in every room version, with unknown keys."""
    pdu = make_pdu(room_version, new_top_level_key={"x": [1]})
    pdu["content"]["org.example.custom"] = True
    validate_pdu(pdu, room_version)


REQUIRED = [
    "type",
    "sender",
    "content",
    "depth",
    "origin_server_ts",
    "hashes",
    "signatures",
    "prev_events",
    "auth_events",
    "room_id",
]


@pytest.mark.parametrize("key", REQUIRED)
@pytest.mark.parametrize(
    "room_version", [RoomVersions.V1, RoomVersions.V3, RoomVersions.V12], ids=lambda v: f"v{v.identifier}"
)
def test_missing_required_key(key: str, room_version: RoomVersion) -> None:
    """Every required key's absence raises InvalidEventError."""
    pdu = make_pdu(room_version)
    del pdu[key]
    with pytest.raises(InvalidEventError):
        validate_pdu(pdu, room_version)


def test_v1_requires_event_id() -> None:
    """Rooms v1/v2 need an ``event_id``; v3+ tolerate one as an unknown key."""
    pdu = make_pdu(RoomVersions.V2)
    del pdu["event_id"]
    with pytest.raises(InvalidEventError):
        validate_pdu(pdu, RoomVersions.V2)
    with pytest.raises(InvalidEventError):
        Event.from_pdu(pdu, RoomVersions.V2)
    validate_pdu(make_pdu(RoomVersions.V3, event_id="$whatever"), RoomVersions.V3)


WRONG_TYPES: list[tuple[str, Any]] = [
    ("type", 5),
    ("sender", None),
    ("sender", "alice"),
    ("content", []),
    ("depth", "1"),
    ("depth", True),
    ("depth", -1),
    ("origin_server_ts", 1.0),
    ("origin_server_ts", 2**64),
    ("hashes", []),
    ("hashes", {"sha256": 1}),
    ("signatures", {"x": "y"}),
    ("signatures", {"x": {"k": 1}}),
    ("prev_events", "x"),
    ("prev_events", [5]),
    ("auth_events", [["$a:b", {}]]),
    ("room_id", 1),
    ("room_id", "room"),
    ("state_key", 0),
    ("origin", 1),
    ("redacts", 7),
    ("unsigned", []),
    ("prev_events", ["$a"] * 21),
    ("auth_events", ["$a"] * 11),
]


@pytest.mark.parametrize(("key", "value"), WRONG_TYPES)
def test_wrong_types(key: str, value: Any) -> None:
    """Wrong types, ranges and counts of known keys raise InvalidEventError (400 M_BAD_JSON)."""
    pdu = make_pdu(RoomVersions.V10, **{key: value})
    with pytest.raises(InvalidEventError) as e:
        validate_pdu(pdu, RoomVersions.V10)
    assert e.value.errcode is Codes.BAD_JSON and e.value.http_status == 400


@pytest.mark.parametrize("refs", [[["$a:b"]], [["$a:b", {}, 1]], ["$a:b"], [[5, {}]], [["$a:b", "hash"]]])
def test_v1_reference_format(refs: Any) -> None:
    """Rooms v1/v2 need ``[event_id, hashes]`` pairs."""
    with pytest.raises(InvalidEventError):
        validate_pdu(make_pdu(RoomVersions.V1, prev_events=refs), RoomVersions.V1)


def test_oversized_event() -> None:
    """Events over 65,536 bytes of canonical JSON raise 413 M_TOO_LARGE; at the limit they pass."""
    pdu = make_pdu(RoomVersions.V10)
    base = len(encode_canonical_json(dict(pdu, content={"body": ""})))
    fits = dict(pdu, content={"body": "a" * (MAX_PDU_BYTES - base)})
    validate_pdu(fits, RoomVersions.V10)
    with pytest.raises(InvalidEventError) as e:
        validate_pdu(dict(pdu, content={"body": "a" * (MAX_PDU_BYTES - base + 1)}), RoomVersions.V10)
    assert e.value.errcode is Codes.TOO_LARGE and e.value.http_status == 413


@pytest.mark.parametrize("key", ["sender", "room_id", "type", "state_key", "event_id"])
def test_identifier_byte_limits(key: str) -> None:
    """sender/room_id/type/state_key/event_id are limited to 255 UTF-8 *bytes*."""
    prefix = {"sender": "@", "room_id": "!", "event_id": "$"}.get(key, "")
    ok = prefix + "a" * (255 - len(prefix))
    too_long = prefix + "é" * 128  # 256+ bytes, but fewer than 255 code points
    validate_pdu(make_pdu(RoomVersions.V1, **{key: ok}), RoomVersions.V1)
    with pytest.raises(InvalidEventError):
        validate_pdu(make_pdu(RoomVersions.V1, **{key: too_long}), RoomVersions.V1)


def test_strict_canonical_json_from_v6() -> None:
    """Floats and out-of-range integers are invalid from v6 on, tolerated before."""
    for content in ({"f": 1.5}, {"i": 2**53}, {"i": -(2**53)}):
        validate_pdu(make_pdu(RoomVersions.V5, content=content), RoomVersions.V5)
        with pytest.raises(InvalidEventError):
            validate_pdu(make_pdu(RoomVersions.V6, content=content), RoomVersions.V6)


def test_room_id_rules_v12() -> None:
    """v12 create events need no room_id; other v12 events and older creates do."""
    create = build_event(
        room_version=RoomVersions.V12,
        room_id=None,
        type="m.room.create",
        sender="@a:x",
        content={"room_version": "12"},
        prev_event_ids=[],
        auth_event_ids=[],
        depth=1,
        origin_server_ts=1,
        state_key="",
    )
    event = finalise_event(create, RoomVersions.V12, "x", "ed25519:1", KEY)
    assert event.room_id == compute_room_id(event.pdu, RoomVersions.V12)
    pdu = make_pdu(RoomVersions.V12)
    del pdu["room_id"]
    with pytest.raises(InvalidEventError):
        validate_pdu(pdu, RoomVersions.V12)
    create11 = dict(create, hashes={"sha256": "x"}, signatures={})
    with pytest.raises(InvalidEventError):
        validate_pdu(create11, RoomVersions.V11)


def test_non_object_and_bad_keys() -> None:
    """Non-objects, non-string keys and non-JSON values raise InvalidEventError."""
    bad: Any
    for bad in (None, [], "x"):
        with pytest.raises(InvalidEventError):
            validate_pdu(bad, RoomVersions.V10)
    with pytest.raises(InvalidEventError):
        validate_pdu({1: "x"}, RoomVersions.V10)  # type: ignore[dict-item]
    with pytest.raises(InvalidEventError):
        validate_pdu(make_pdu(RoomVersions.V3, content={"x": {1, 2}}), RoomVersions.V3)


# --- builder and model ------------------------------------------------------------------------


def test_builder_v1_format() -> None:
    """v1/v2 PDUs carry ``event_id`` and ``[id, hashes]`` references."""
    pdu = build_event(
        room_version=RoomVersions.V1,
        room_id="!r:x",
        type="m.room.message",
        sender="@a:x",
        content={},
        prev_event_ids=["$p:x"],
        auth_event_ids=["$a:x"],
        depth=2,
        origin_server_ts=3,
        event_id_localpart="loc",
        reference_hashes={"$p:x": {"sha256": "h"}},
    )
    assert pdu["event_id"] == "$loc:x"
    assert pdu["prev_events"] == [["$p:x", {"sha256": "h"}]]
    assert pdu["auth_events"] == [["$a:x", {}]]
    random_id = build_event(
        room_version=RoomVersions.V2,
        room_id="!r:x",
        type="t",
        sender="@a:x",
        content={},
        prev_event_ids=[],
        auth_event_ids=[],
        depth=0,
        origin_server_ts=0,
        origin="origin.example",
    )["event_id"]
    assert random_id.startswith("$") and random_id.endswith(":origin.example")


def test_builder_v3_format_and_copies() -> None:
    """v3+ PDUs use bare IDs, have no event_id, and do not alias the caller's objects."""
    content = {"nested": {"a": 1}}
    unsigned = {"age": 1}
    pdu = build_event(
        room_version=RoomVersions.V10,
        room_id="!r:x",
        type="t",
        sender="@a:x",
        content=content,
        prev_event_ids=["$p"],
        auth_event_ids=[],
        depth=1,
        origin_server_ts=1,
        state_key="",
        unsigned=unsigned,
    )
    assert pdu["prev_events"] == ["$p"] and "event_id" not in pdu and pdu["state_key"] == ""
    content["nested"]["a"] = 2
    unsigned["age"] = 2
    assert pdu["content"] == {"nested": {"a": 1}} and pdu["unsigned"] == {"age": 1}


def test_builder_redacts_placement() -> None:
    """``redacts`` is top-level before v11 and inside content from v11."""
    kwargs: dict[str, Any] = dict(
        room_id="!r:x",
        type="m.room.redaction",
        sender="@a:x",
        content={},
        prev_event_ids=[],
        auth_event_ids=[],
        depth=1,
        origin_server_ts=1,
        redacts="$t",
        event_id_localpart="l",
    )
    old = build_event(room_version=RoomVersions.V10, **kwargs)
    new = build_event(room_version=RoomVersions.V11, **kwargs)
    assert old["redacts"] == "$t" and "redacts" not in old["content"]
    assert new["content"]["redacts"] == "$t" and "redacts" not in new
    assert (
        Event.from_pdu(
            finalise_event(new, RoomVersions.V11, "x", "ed25519:1", KEY).pdu, RoomVersions.V11
        ).redacts
        == "$t"
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"room_version": RoomVersions.V12, "type": "m.room.create", "room_id": "!r:x"},
        {"room_id": None},
        {"redacts": "$x"},
        {"depth": -1},
        {"depth": True},
        {"origin_server_ts": "now"},
        {"content": []},
        {"prev_event_ids": "$abc"},
        {"sender": "nodomain", "room_version": RoomVersions.V1},
    ],
)
def test_builder_rejects_misuse(overrides: dict[str, Any]) -> None:
    """Inconsistent builder inputs raise LocalProtocolError."""
    kwargs: dict[str, Any] = dict(
        room_version=RoomVersions.V10,
        room_id="!r:x",
        type="t",
        sender="@a:x",
        content={},
        prev_event_ids=[],
        auth_event_ids=[],
        depth=1,
        origin_server_ts=1,
    )
    kwargs.update(overrides)
    with pytest.raises(LocalProtocolError):
        build_event(**kwargs)


@pytest.mark.parametrize("room_version", ALL_VERSIONS, ids=lambda v: f"v{v.identifier}")
def test_finalise_event(room_version: RoomVersion) -> None:
    """finalise_event hashes, signs and returns an Event whose ID matches the PDU."""
    unsigned_pdu = build_event(
        room_version=room_version,
        room_id="!r:example.org",
        type="m.room.topic",
        sender="@a:example.org",
        content={"topic": "t"},
        prev_event_ids=["$p:example.org"],
        auth_event_ids=["$a:example.org"],
        depth=3,
        origin_server_ts=9,
        state_key="",
        event_id_localpart="e",
    )
    event = finalise_event(unsigned_pdu, room_version, SERVER, "ed25519:1", KEY)
    assert "hashes" not in unsigned_pdu and "signatures" not in unsigned_pdu
    assert check_content_hash(event.pdu)
    assert event.event_id == compute_event_id(event.pdu, room_version)
    assert event.state_tuple == ("m.room.topic", "")
    assert event.prev_event_ids == ("$p:example.org",)
    verify_event_signature(event.pdu, room_version, SERVER, get_verify_key(KEY))


def test_finalise_rejects_oversized() -> None:
    """finalise_event validates: a too-large event raises 413."""
    pdu = build_event(
        room_version=RoomVersions.V10,
        room_id="!r:x",
        type="t",
        sender="@a:x",
        content={"b": "x" * MAX_PDU_BYTES},
        prev_event_ids=[],
        auth_event_ids=[],
        depth=1,
        origin_server_ts=1,
    )
    with pytest.raises(InvalidEventError) as e:
        finalise_event(pdu, RoomVersions.V10, "x", "ed25519:1", KEY)
    assert e.value.errcode is Codes.TOO_LARGE
