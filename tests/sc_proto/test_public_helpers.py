"""The library-user helpers of issue 11: base64 hash forms, keys from seeds, auth state from state maps.

Each helper is reached through ``sc_proto`` (its ``__all__``), as a library user would.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sc_proto
from sc_proto import (
    KNOWN_ROOM_VERSIONS,
    AuthError,
    RoomVersion,
    SignatureError,
    auth_event_ids_from_state_map,
    auth_state_from_state_map,
    check_auth,
    check_auth_events_match,
    compute_content_hash,
    compute_event_id,
    compute_reference_hash,
    content_hash_b64,
    decode_signing_key_base64,
    encode_signing_key_base64,
    get_key_id,
    get_verify_key,
    reference_hash_b64,
    sign_json,
    signing_key_from_seed,
    verify_json,
)
from sc_proto.room_versions import EventFormat
from tests.sc_proto.eventfactory import ALICE, BOB, RoomBuilder
from tests.sc_proto.vectors import vector_params

ALL = list(KNOWN_ROOM_VERSIONS.values())
HASHED_IDS = [v for v in ALL if v.event_format is not EventFormat.V1]

NEW_NAMES = [
    "auth_event_ids_from_state_map",
    "auth_state_from_state_map",
    "build_auth_state",
    "content_hash_b64",
    "encode_signing_key_base64",
    "reference_hash_b64",
    "signing_key_from_seed",
]


def _unpadded(data: bytes, urlsafe: bool = False) -> str:
    encoded = base64.urlsafe_b64encode(data) if urlsafe else base64.b64encode(data)
    return encoded.decode().rstrip("=")


def test_helpers_are_public() -> None:
    """Every new helper is in ``sc_proto.__all__`` and documented."""
    for name in NEW_NAMES:
        assert name in sc_proto.__all__
        assert (getattr(sc_proto, name).__doc__ or "").strip(), name


# --- base64 hash forms ----------------------------------------------------------------------------

pdus = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["m.room.message", "m.room.topic", "m.room.member"]),
        "sender": st.just(ALICE),
        "room_id": st.just("!r:example.org"),
        "content": st.dictionaries(st.text(max_size=5), st.text(max_size=10) | st.integers(-100, 100), max_size=3),
        "depth": st.integers(1, 1000),
        "origin_server_ts": st.integers(0, 2**40),
        "prev_events": st.just([]),
        "auth_events": st.just([]),
        "hashes": st.just({"sha256": "x"}),
    }
)


@settings(max_examples=60, deadline=None)
@given(pdu=pdus, rv=st.sampled_from(HASHED_IDS))
def test_reference_hash_b64_agrees_with_event_ids(pdu: dict[str, object], rv: RoomVersion) -> None:
    """``$`` + the base64 reference hash is the event ID (URL-safe from v4, standard in v3)."""
    urlsafe = rv.event_format is not EventFormat.V2
    assert "$" + reference_hash_b64(pdu, rv, urlsafe=urlsafe) == compute_event_id(pdu, rv)
    assert reference_hash_b64(pdu, rv) == _unpadded(compute_reference_hash(pdu, rv))


@settings(max_examples=60, deadline=None)
@given(pdu=pdus)
def test_content_hash_b64_is_unpadded_sha256(pdu: dict[str, object]) -> None:
    """The base64 form decodes to the raw content hash and carries no padding."""
    text = content_hash_b64(pdu)
    assert "=" not in text and len(text) == 43
    assert base64.b64decode(text + "=") == compute_content_hash(pdu)


@pytest.mark.parametrize("vector", vector_params("content_hash"))
def test_content_hash_b64_vectors(vector: dict[str, object]) -> None:
    """The shared content-hash vectors, through the public helper."""
    assert content_hash_b64(vector["input"]) == vector["expected"]  # type: ignore[arg-type]  # JSON object


@pytest.mark.parametrize("vector", vector_params("event_id"))
def test_reference_hash_b64_vectors(vector: dict[str, object]) -> None:
    """The shared reference-hash vectors, through the public helper."""
    rv = KNOWN_ROOM_VERSIONS[str(vector["room_version"])]
    assert reference_hash_b64(vector["input"], rv) == vector["expected_reference_hash"]  # type: ignore[arg-type]


# --- signing keys from seeds ----------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), version=st.from_regex(r"[a-zA-Z0-9_]{1,8}", fullmatch=True))
def test_signing_key_from_seed_round_trips(seed: bytes, version: str) -> None:
    """Seed -> key -> base64 seed -> key gives the same key; its signatures verify."""
    key = signing_key_from_seed(seed, version)
    assert get_key_id(key) == f"ed25519:{version}"
    encoded = encode_signing_key_base64(key)
    assert encoded == _unpadded(seed)
    again = decode_signing_key_base64("ed25519", version, encoded)
    assert again.encode() == seed
    assert get_verify_key(again).encode() == get_verify_key(key).encode()
    signed = sign_json({"a": 1}, "example.org", key)
    verify_json(signed, "example.org", get_verify_key(again))


def test_signing_key_from_seed_matches_spec_key() -> None:
    """The spec's appendix seed gives the spec's public key."""
    seed = base64.b64decode("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1=")
    key = signing_key_from_seed(seed, "1")
    assert _unpadded(get_verify_key(key).encode()) == "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI"


@pytest.mark.parametrize("seed", [b"", b"\x00" * 31, b"\x00" * 33])
def test_signing_key_from_seed_refuses_bad_seeds(seed: bytes) -> None:
    with pytest.raises(SignatureError):
        signing_key_from_seed(seed, "1")


# --- auth state from a state map ------------------------------------------------------------------


def _room(rv: RoomVersion) -> RoomBuilder:
    room = RoomBuilder(rv).initial_state(join_rule="public")
    room.add("m.room.topic", ALICE, {"topic": "t"}, "")
    room.add("m.room.name", ALICE, {"name": "n"}, "")
    return room


@pytest.mark.parametrize("rv", ALL, ids=lambda v: "v" + v.identifier)
def test_auth_state_selects_what_the_rules_read(rv: RoomVersion) -> None:
    """Only auth-relevant keys are kept, the create event always; check_auth agrees with full state."""
    room = _room(rv)
    join = room.build("m.room.member", BOB, {"membership": "join"}, BOB)
    auth_state = auth_state_from_state_map(join, room.state, rv)
    # Bob's join reads Bob's (absent) membership, not Alice's, nor the topic or name.
    assert set(auth_state) == {("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.join_rules", "")}
    check_auth(join, auth_state, rv)
    check_auth(join, room.state, rv)


@pytest.mark.parametrize("rv", ALL, ids=lambda v: "v" + v.identifier)
def test_auth_event_ids_build_events_that_pass(rv: RoomVersion) -> None:
    """Events listing ``auth_event_ids_from_state_map`` pass the auth-events rule and the rules."""
    room = _room(rv)
    fields = {"type": "m.room.topic", "sender": ALICE, "content": {"topic": "new"}, "state_key": ""}
    auth_ids = auth_event_ids_from_state_map(fields, room.state, rv)
    assert (room.create_event is not None and room.create_event.event_id in auth_ids) == (
        rv.create_event_in_auth_events
    )
    event = room.build("m.room.topic", ALICE, {"topic": "new"}, "", auth=auth_ids)
    check_auth_events_match(event, room.events, rv)
    check_auth(event, auth_state_from_state_map(event, room.state, rv), rv)


@pytest.mark.parametrize("rv", ALL, ids=lambda v: "v" + v.identifier)
def test_auth_state_keeps_rejections(rv: RoomVersion) -> None:
    """A state map without the sender's join yields an auth state the rules reject."""
    room = _room(rv)
    event = room.build("m.room.topic", BOB, {"topic": "x"}, "")
    with pytest.raises(AuthError):
        check_auth(event, auth_state_from_state_map(event, room.state, rv), rv)
