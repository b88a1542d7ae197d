"""Tests for sc_proto.federation.keys: server-key responses, notary entries, key queries, validity."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sc_proto.crypto.keys import (
    encode_verify_key_base64,
    generate_signing_key,
    get_key_id,
    get_verify_key,
    signing_key_from_seed,
)
from sc_proto.crypto.signing import sign_json, verify_json
from sc_proto.errors import Codes, RemoteProtocolError, SignatureError
from sc_proto.federation import (
    MAX_KEY_VALIDITY_MS,
    MAX_KEYS_PER_RESPONSE,
    KeyQuery,
    build_key_query_request,
    build_server_keys_response,
    key_valid_at,
    key_validity_ts,
    notary_sign,
    parse_key_query_request,
    parse_notary_entry,
    parse_notary_response,
    parse_server_keys,
)
from sc_proto.room_versions import RoomVersions

ORIGIN = "origin.test:8448"
NOTARY = "notary.test"
NOW = 1_700_000_000_000
HOUR = 3600 * 1000

KEY = signing_key_from_seed(b"\x01" * 32, "k1")
OLD_KEY = signing_key_from_seed(b"\x02" * 32, "old1")
NOTARY_KEY = signing_key_from_seed(b"\x03" * 32, "n1")
OTHER_KEY = signing_key_from_seed(b"\x04" * 32, "k1")  # same key ID as KEY, different key
OLD_EXPIRED = NOW - 10 * HOUR


def _response(valid_until_ts: int = NOW + 24 * HOUR) -> dict[str, Any]:
    return build_server_keys_response(
        ORIGIN, [KEY], {get_key_id(OLD_KEY): (get_verify_key(OLD_KEY), OLD_EXPIRED)}, valid_until_ts
    )


def _resign(obj: dict[str, Any], key: Any = KEY, server: str = ORIGIN) -> dict[str, Any]:
    return sign_json({k: v for k, v in obj.items() if k != "signatures"}, server, key)


class BuildAndParseTests:
    def test_built_response_is_verifiable(self) -> None:
        """Our own response parses and verifies, with current and old keys and the shape of keys.yaml."""
        response = _response()
        assert set(response) == {"server_name", "verify_keys", "old_verify_keys", "valid_until_ts", "signatures"}
        assert response["old_verify_keys"]["ed25519:old1"]["expired_ts"] == OLD_EXPIRED
        keys = parse_server_keys(response, expected_server_name=ORIGIN, received_ts=NOW)
        assert set(keys.keys) == {"ed25519:k1", "ed25519:old1"}
        assert keys.keys["ed25519:k1"].verify_key == get_verify_key(KEY)
        assert keys.keys["ed25519:old1"].expired_ts == OLD_EXPIRED
        assert keys.keys["ed25519:old1"].valid_until_ts is None
        verify_json(response, ORIGIN, get_verify_key(KEY))

    def test_every_current_key_signs(self) -> None:
        """With two current keys, the response carries a signature by each."""
        second = signing_key_from_seed(b"\x05" * 32, "k2")
        response = build_server_keys_response(ORIGIN, [KEY, second], {}, NOW)
        assert set(response["signatures"][ORIGIN]) == {"ed25519:k1", "ed25519:k2"}

    def test_build_refuses_no_key_or_overlap(self) -> None:
        """No signing key, or an old key ID that is also current, is a programming error."""
        with pytest.raises(ValueError):
            build_server_keys_response(ORIGIN, [], {}, NOW)
        with pytest.raises(ValueError):
            build_server_keys_response(ORIGIN, [KEY], {"ed25519:k1": (get_verify_key(KEY), NOW)}, NOW)

    def test_forged_self_signature_refused(self) -> None:
        """A response signed under the listed key ID by another key fails."""
        forged = _resign(_response(), OTHER_KEY)
        with pytest.raises(SignatureError) as e:
            parse_server_keys(forged, expected_server_name=ORIGIN, received_ts=NOW)
        assert e.value.http_status == 401

    def test_tampered_content_refused(self) -> None:
        """Changing the listed key after signing breaks the signature."""
        tampered = _response()
        tampered["valid_until_ts"] += 1
        with pytest.raises(SignatureError):
            parse_server_keys(tampered, expected_server_name=ORIGIN, received_ts=NOW)

    def test_signature_by_unlisted_key_only_refused(self) -> None:
        """A signature by a key not in verify_keys does not count (nor does an old key's)."""
        stranger = signing_key_from_seed(b"\x06" * 32, "zz")
        unsigned = {k: v for k, v in _response().items() if k != "signatures"}
        with pytest.raises(SignatureError):
            parse_server_keys(sign_json(unsigned, ORIGIN, stranger), expected_server_name=ORIGIN, received_ts=NOW)
        with pytest.raises(SignatureError):
            parse_server_keys(sign_json(unsigned, ORIGIN, OLD_KEY), expected_server_name=ORIGIN, received_ts=NOW)

    def test_unsigned_refused(self) -> None:
        """No signatures at all, or signatures of another server only, fail."""
        unsigned = {k: v for k, v in _response().items() if k != "signatures"}
        with pytest.raises(SignatureError):
            parse_server_keys(unsigned, expected_server_name=ORIGIN, received_ts=NOW)
        with pytest.raises(SignatureError):
            parse_server_keys(sign_json(unsigned, "evil.test", KEY), expected_server_name=ORIGIN, received_ts=NOW)

    def test_server_name_mismatch_refused(self) -> None:
        """A correctly self-signed response of another server (a replay) is refused."""
        other = build_server_keys_response("evil.test", [KEY], {}, NOW + HOUR)
        with pytest.raises(RemoteProtocolError) as e:
            parse_server_keys(other, expected_server_name=ORIGIN, received_ts=NOW)
        assert e.value.errcode is Codes.BAD_JSON

    @pytest.mark.parametrize("value", [None, "1", 1.5, True, -1, 2**53, [1]])
    def test_bad_valid_until_ts_refused(self, value: object) -> None:
        """valid_until_ts must be a non-negative JSON-safe integer."""
        response = {**_response(), "valid_until_ts": value}  # checked before the signature
        with pytest.raises(RemoteProtocolError):
            parse_server_keys(response, expected_server_name=ORIGIN, received_ts=NOW)

    def test_bad_valid_until_ts_is_bad_json(self) -> None:
        """A malformed valid_until_ts is 400 M_BAD_JSON, not a signature failure."""
        with pytest.raises(RemoteProtocolError) as e:
            parse_server_keys({**_response(), "valid_until_ts": "x"}, expected_server_name=ORIGIN, received_ts=NOW)
        assert (e.value.http_status, e.value.errcode) == (400, Codes.BAD_JSON)

    def test_validity_capped_at_seven_days(self) -> None:
        """A key valid for a year counts as valid for 7 days after receipt (v5 signing requirements)."""
        keys = parse_server_keys(_response(NOW + 365 * 24 * HOUR), expected_server_name=ORIGIN, received_ts=NOW)
        assert keys.valid_until_ts == NOW + MAX_KEY_VALIDITY_MS
        assert keys.response_valid_until_ts == NOW + 365 * 24 * HOUR
        assert key_valid_at(keys, "ed25519:k1", NOW + MAX_KEY_VALIDITY_MS) is not None
        assert key_valid_at(keys, "ed25519:k1", NOW + MAX_KEY_VALIDITY_MS + 1) is None

    def test_shorter_validity_kept(self) -> None:
        """A validity under 7 days is used as written."""
        keys = parse_server_keys(_response(NOW + HOUR), expected_server_name=ORIGIN, received_ts=NOW)
        assert keys.valid_until_ts == NOW + HOUR

    @pytest.mark.parametrize("key_id", ["ed25519", "ed25519:", "ed25519:a-b", ":abc", "ed25519:a b"])
    def test_malformed_key_id_refused(self, key_id: str) -> None:
        """Key IDs must be ALGORITHM:VERSION with VERSION in [a-zA-Z0-9_]."""
        response = _response()
        response["verify_keys"][key_id] = {"key": encode_verify_key_base64(get_verify_key(OLD_KEY))}
        with pytest.raises(RemoteProtocolError):
            parse_server_keys(_resign(response), expected_server_name=ORIGIN, received_ts=NOW)

    def test_unknown_algorithm_ignored(self) -> None:
        """A key of an algorithm we do not support is skipped, not an error."""
        response = _response()
        response["verify_keys"]["curve25519:abc"] = {"key": "not even base64 !"}
        response["old_verify_keys"]["rsa:x"] = {"key": "??", "expired_ts": "soon"}
        keys = parse_server_keys(_resign(response), expected_server_name=ORIGIN, received_ts=NOW)
        assert set(keys.keys) == {"ed25519:k1", "ed25519:old1"}

    @pytest.mark.parametrize("entry", [{"key": "!!"}, {"key": "AAAA"}, {}, "key", {"key": 5}])
    def test_malformed_key_refused(self, entry: object) -> None:
        """A key that is not unpadded base64 of 32 bytes fails."""
        response = _response()
        response["verify_keys"]["ed25519:k2"] = entry
        with pytest.raises(RemoteProtocolError):
            parse_server_keys(_resign(response), expected_server_name=ORIGIN, received_ts=NOW)

    @pytest.mark.parametrize("expired", [None, "1", -5, True])
    def test_old_key_needs_expired_ts(self, expired: object) -> None:
        """old_verify_keys entries need an integer expired_ts."""
        response = _response()
        response["old_verify_keys"]["ed25519:old1"]["expired_ts"] = expired
        with pytest.raises(RemoteProtocolError):
            parse_server_keys(_resign(response), expected_server_name=ORIGIN, received_ts=NOW)

    @pytest.mark.parametrize("obj", [None, [], "x", {"server_name": ORIGIN}, {"server_name": 5}])
    def test_not_a_response_refused(self, obj: object) -> None:
        """Garbage is a RemoteProtocolError, never a KeyError/TypeError."""
        with pytest.raises(RemoteProtocolError):
            parse_server_keys(obj, expected_server_name=ORIGIN, received_ts=NOW)

    def test_too_many_keys_refused(self) -> None:
        """More than MAX_KEYS_PER_RESPONSE keys (current plus old) is refused before any signature check."""
        response = _response()
        entry = {"key": encode_verify_key_base64(get_verify_key(OLD_KEY)), "expired_ts": 1}
        response["old_verify_keys"] = {f"ed25519:o{i}": entry for i in range(MAX_KEYS_PER_RESPONSE)}
        with pytest.raises(RemoteProtocolError):
            parse_server_keys(response, expected_server_name=ORIGIN, received_ts=NOW)
        del response["old_verify_keys"]["ed25519:o0"]
        parse_server_keys(_resign(response), expected_server_name=ORIGIN, received_ts=NOW)

    def test_verify_keys_required(self) -> None:
        """verify_keys is required (keys.yaml); a non-object old_verify_keys fails."""
        without = {k: v for k, v in _response().items() if k != "verify_keys"}
        with pytest.raises(RemoteProtocolError):
            parse_server_keys(_resign(without), expected_server_name=ORIGIN, received_ts=NOW)
        with pytest.raises(RemoteProtocolError):
            parse_server_keys(_resign({**_response(), "old_verify_keys": []}), expected_server_name=ORIGIN, received_ts=NOW)

    @settings(max_examples=30, deadline=None)
    @given(
        version=st.from_regex(r"[a-zA-Z0-9_]{1,12}", fullmatch=True),
        valid_for=st.integers(min_value=0, max_value=30 * 24 * HOUR),
        seed=st.binary(min_size=32, max_size=32),
    )
    def test_round_trip(self, version: str, valid_for: int, seed: bytes) -> None:
        """Any response we build parses back to the same key, validity capped at 7 days."""
        key = signing_key_from_seed(seed, version)
        response = build_server_keys_response(ORIGIN, [key], {}, NOW + valid_for)
        keys = parse_server_keys(copy.deepcopy(response), expected_server_name=ORIGIN, received_ts=NOW)
        assert keys.keys[f"ed25519:{version}"].verify_key == get_verify_key(key)
        assert keys.valid_until_ts == NOW + min(valid_for, MAX_KEY_VALIDITY_MS)


class ValidityTests:
    def test_old_key_valid_before_expiry_only(self) -> None:
        """An old key checks signatures made before expired_ts, not at or after it."""
        keys = parse_server_keys(_response(), expected_server_name=ORIGIN, received_ts=NOW)
        assert key_valid_at(keys, "ed25519:old1", OLD_EXPIRED - 1) == get_verify_key(OLD_KEY)
        assert key_valid_at(keys, "ed25519:old1", OLD_EXPIRED) is None
        assert key_valid_at(keys, "ed25519:missing", NOW) is None

    def test_current_key_expires(self) -> None:
        """A current key is valid up to valid_until_ts (plus the skew allowed), not after."""
        keys = parse_server_keys(_response(NOW + HOUR), expected_server_name=ORIGIN, received_ts=NOW)
        assert key_valid_at(keys, "ed25519:k1", NOW + HOUR) is not None
        assert key_valid_at(keys, "ed25519:k1", NOW + HOUR + 1) is None
        assert key_valid_at(keys, "ed25519:k1", NOW + HOUR + 1, skew_ms=1) is not None

    def test_key_validity_ts_per_room_version(self) -> None:
        """Rooms v1-v4 ignore valid_until_ts (timestamp 0); v5+ use origin_server_ts."""
        assert key_validity_ts(RoomVersions.V4, NOW) == 0
        assert key_validity_ts(RoomVersions.V5, NOW) == NOW
        assert key_validity_ts(RoomVersions.V10, NOW) == NOW


def _notary_entry() -> dict[str, Any]:
    return notary_sign(_response(), ORIGIN, NOTARY, NOTARY_KEY)


NOTARY_KEYS = {"ed25519:n1": get_verify_key(NOTARY_KEY)}


class NotaryTests:
    def test_signed_by_both_accepted(self) -> None:
        """An entry with the origin's and the notary's signatures parses."""
        keys = parse_notary_entry(
            _notary_entry(), expected_server_name=ORIGIN, notary_name=NOTARY, notary_keys=NOTARY_KEYS, received_ts=NOW
        )
        assert "ed25519:k1" in keys.keys

    def test_notary_sign_keeps_only_origin_signatures(self) -> None:
        """notary_sign drops third-party signatures, keeps the origin's, adds ours."""
        third = sign_json(_response(), "third.test", OTHER_KEY)
        signed = notary_sign(third, ORIGIN, NOTARY, NOTARY_KEY)
        assert set(signed["signatures"]) == {ORIGIN, NOTARY}

    def test_without_notary_signature_refused(self) -> None:
        """The origin's self-signed response relayed without the notary's signature fails."""
        with pytest.raises(SignatureError):
            parse_notary_entry(
                _response(), expected_server_name=ORIGIN, notary_name=NOTARY, notary_keys=NOTARY_KEYS, received_ts=NOW
            )

    def test_notary_signature_by_unknown_key_refused(self) -> None:
        """A notary signature by a key we do not know for the notary fails."""
        entry = notary_sign(_response(), ORIGIN, NOTARY, generate_signing_key("n2"))
        with pytest.raises(SignatureError):
            parse_notary_entry(
                entry, expected_server_name=ORIGIN, notary_name=NOTARY, notary_keys=NOTARY_KEYS, received_ts=NOW
            )

    def test_forged_notary_signature_refused(self) -> None:
        """A notary signature under the known key ID by another key fails."""
        entry = notary_sign(_response(), ORIGIN, NOTARY, signing_key_from_seed(b"\x07" * 32, "n1"))
        with pytest.raises(SignatureError):
            parse_notary_entry(
                entry, expected_server_name=ORIGIN, notary_name=NOTARY, notary_keys=NOTARY_KEYS, received_ts=NOW
            )

    def test_notary_cannot_forge_origin_keys(self) -> None:
        """A notary-signed response whose origin signature does not verify fails (notary alone is not enough)."""
        fake = build_server_keys_response(ORIGIN, [OTHER_KEY], {}, NOW + HOUR)
        fake["verify_keys"] = _response()["verify_keys"]  # claims the real key, signed by another
        entry = notary_sign(fake, ORIGIN, NOTARY, NOTARY_KEY)
        with pytest.raises(SignatureError):
            parse_notary_entry(
                entry, expected_server_name=ORIGIN, notary_name=NOTARY, notary_keys=NOTARY_KEYS, received_ts=NOW
            )

    def test_wrong_server_refused(self) -> None:
        """An entry for another server than asked fails."""
        with pytest.raises(RemoteProtocolError):
            parse_notary_entry(
                _notary_entry(), expected_server_name="other.test", notary_name=NOTARY,
                notary_keys=NOTARY_KEYS, received_ts=NOW,
            )  # fmt: skip

    @pytest.mark.parametrize("answer", [None, {}, {"server_keys": {}}, {"server_keys": [1]}, []])
    def test_malformed_notary_answer(self, answer: object) -> None:
        """The answer must be {"server_keys": [object, ...]}."""
        with pytest.raises(RemoteProtocolError):
            parse_notary_response(answer)

    def test_notary_answer_bounded(self) -> None:
        """An answer with more entries than allowed fails."""
        with pytest.raises(RemoteProtocolError):
            parse_notary_response({"server_keys": [{}] * 3}, max_entries=2)
        assert parse_notary_response({"server_keys": [{}] * 2}, max_entries=2) == [{}, {}]


class KeyQueryTests:
    def _parse(self, body: object) -> list[KeyQuery]:
        return parse_key_query_request(body, now_ms=NOW, max_servers=3, max_key_ids=2)

    def test_round_trip(self) -> None:
        """A query we build parses back."""
        body = build_key_query_request([KeyQuery(ORIGIN, ("ed25519:k1",), NOW + 5)])
        assert body == {"server_keys": {ORIGIN: {"ed25519:k1": {"minimum_valid_until_ts": NOW + 5}}}}
        assert self._parse(body) == [KeyQuery(ORIGIN, ("ed25519:k1",), NOW + 5)]

    def test_defaults(self) -> None:
        """No key IDs means all keys, valid until now; a key without criteria uses now too."""
        assert self._parse({"server_keys": {ORIGIN: {}}}) == [KeyQuery(ORIGIN, (), NOW)]
        assert self._parse({"server_keys": {ORIGIN: {"ed25519:a": {}}}}) == [KeyQuery(ORIGIN, ("ed25519:a",), NOW)]
        assert self._parse({"server_keys": {}}) == []

    def test_latest_minimum_wins(self) -> None:
        """Per server, the latest minimum_valid_until_ts among its keys is used."""
        body = {"server_keys": {ORIGIN: {"ed25519:a": {"minimum_valid_until_ts": 5}, "ed25519:b": {}}}}
        assert self._parse(body)[0].minimum_valid_until_ts == NOW
        body = {"server_keys": {ORIGIN: {"ed25519:a": {"minimum_valid_until_ts": NOW + 9}, "ed25519:b": {}}}}
        assert self._parse(body)[0].minimum_valid_until_ts == NOW + 9

    @pytest.mark.parametrize(
        "body",
        [
            None,
            [],
            {},
            {"server_keys": []},
            {"server_keys": {ORIGIN: []}},
            {"server_keys": {ORIGIN: {"ed25519:a": 5}}},
            {"server_keys": {ORIGIN: {"ed25519:a": {"minimum_valid_until_ts": "5"}}}},
            {"server_keys": {ORIGIN: {"ed25519:a": {"minimum_valid_until_ts": -1}}}},
            {"server_keys": {ORIGIN: {"ed25519:a": {"minimum_valid_until_ts": True}}}},
            {"server_keys": {ORIGIN: {"ed25519:a": {"minimum_valid_until_ts": 2**60}}}},
            {"server_keys": {ORIGIN: {"bad key": {}}}},
            {"server_keys": {"not a server!": {}}},
            {"server_keys": {"": {}}},
        ],
    )
    def test_malformed_refused(self, body: object) -> None:
        """Malformed bodies are 400 errors."""
        with pytest.raises(RemoteProtocolError) as e:
            self._parse(body)
        assert e.value.http_status == 400

    def test_limits(self) -> None:
        """More servers or key IDs than allowed are 400 M_TOO_LARGE."""
        servers = {f"s{i}.test": {} for i in range(4)}
        with pytest.raises(RemoteProtocolError) as e:
            self._parse({"server_keys": servers})
        assert (e.value.http_status, e.value.errcode) == (400, Codes.TOO_LARGE)
        keys = {f"ed25519:k{i}": {} for i in range(3)}
        with pytest.raises(RemoteProtocolError) as e:
            self._parse({"server_keys": {ORIGIN: keys}})
        assert e.value.errcode is Codes.TOO_LARGE
