"""sc_proto.e2ee.keys: device-key, one-time and fallback key parsing and signature checks."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sc_proto.crypto.keys import SigningKey, encode_verify_key_base64, generate_signing_key, get_verify_key
from sc_proto.crypto.signing import sign_json
from sc_proto.e2ee.keys import (
    MAX_KEYS_PER_UPLOAD,
    InvalidKeysError,
    canonical_key_json,
    parse_device_keys,
    parse_fallback_keys,
    parse_one_time_keys,
    split_key_id,
    verify_device_keys,
    verify_signed_by,
)
from sc_proto.errors import Codes, MatrixError

USER = "@alice:example.org"
DEVICE = "JLAFKJWSCS"
KEY = generate_signing_key("k")


def signed_device_keys(key: SigningKey = KEY, device: str = DEVICE, **override: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "user_id": USER,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {f"curve25519:{device}": "c25519", f"ed25519:{device}": encode_verify_key_base64(get_verify_key(key))},
    }
    body.update(override)
    return sign_json(body, USER, key, key_id=f"ed25519:{device}")


class DeviceKeysTests:
    def test_valid_keys_parse_and_verify(self) -> None:
        """A self-signed device-keys object parses; ``unsigned`` is dropped from ``raw``."""
        obj = signed_device_keys()
        obj["unsigned"] = {"device_display_name": "x"}
        parsed = parse_device_keys(obj)
        verify_device_keys(parsed)
        assert parsed.user_id == USER and parsed.device_id == DEVICE
        assert parsed.algorithms == ("m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2")
        assert "unsigned" not in parsed.raw
        assert parsed.ed25519_key == obj["keys"][f"ed25519:{DEVICE}"]

    @pytest.mark.parametrize(
        "mutate",
        [
            lambda o: o.update(algorithms=["changed"]),
            lambda o: o["keys"].update({f"curve25519:{DEVICE}": "other"}),
            lambda o: o.update(extra_field=1),
            lambda o: o["signatures"][USER].update({f"ed25519:{DEVICE}": "A" * 86}),
            lambda o: o["signatures"].update({USER: {}}),
            lambda o: o["signatures"].update({USER: {f"ed25519:{DEVICE}": "***"}}),
        ],
    )
    def test_tampering_breaks_the_signature(self, mutate: Any) -> None:
        """Any change to signed fields, or a bad/missing signature, is refused with 400."""
        obj = signed_device_keys()
        mutate(obj)
        with pytest.raises(InvalidKeysError) as caught:
            verify_device_keys(parse_device_keys(obj))
        assert caught.value.http_status == 400

    def test_signature_by_another_key_is_refused(self) -> None:
        """Signed by a different key than the one it publishes: refused."""
        obj = signed_device_keys()
        other = signed_device_keys(generate_signing_key("o"))
        obj["keys"][f"ed25519:{DEVICE}"] = other["keys"][f"ed25519:{DEVICE}"]
        with pytest.raises(InvalidKeysError):
            verify_device_keys(parse_device_keys(obj))

    @pytest.mark.parametrize(
        "override",
        [
            {"user_id": 5},
            {"user_id": ""},
            {"device_id": None},
            {"device_id": ""},
            {"algorithms": "m.olm"},
            {"algorithms": [1]},
            {"algorithms": [""]},
            {"algorithms": ["a"] * 65},
            {"keys": []},
            {"keys": {"ed25519:OTHER": "x"}},
            {"keys": {f"ed25519:{DEVICE}": 5}},
            {"keys": {"nocolon": "x"}},
            {"keys": {f"curve25519:{DEVICE}": "x"}},
            {"signatures": []},
            {"signatures": {USER: "sig"}},
        ],
    )
    def test_malformed_device_keys(self, override: dict[str, Any]) -> None:
        """Wrong types, keys of another device, no ed25519 key: InvalidKeysError, never a raw error."""
        obj = {**signed_device_keys(), **override}
        with pytest.raises(InvalidKeysError):
            parse_device_keys(obj)

    @pytest.mark.parametrize("value", [None, "str", [], 5])
    def test_not_an_object(self, value: Any) -> None:
        with pytest.raises(InvalidKeysError):
            parse_device_keys(value)

    def test_malformed_public_key(self) -> None:
        """A device ed25519 key that is not 32 bytes of base64 is refused, not crashed on."""
        obj = signed_device_keys()
        obj["keys"][f"ed25519:{DEVICE}"] = "not base64!"
        with pytest.raises(InvalidKeysError):
            verify_device_keys(parse_device_keys(obj))

    def test_device_ids_outside_key_version_grammar(self) -> None:
        """Device IDs with characters key versions forbid ('-') are still verified by explicit key ID."""
        obj = {
            "user_id": USER, "device_id": "AB-CD", "algorithms": [],
            "keys": {"ed25519:AB-CD": encode_verify_key_base64(get_verify_key(KEY))},
        }
        signed = sign_json(obj, USER, KEY, key_id="ed25519:key")
        signed["signatures"][USER]["ed25519:AB-CD"] = signed["signatures"][USER].pop("ed25519:key")
        verify_device_keys(parse_device_keys(signed))

    def test_oversized(self) -> None:
        """A huge device-keys object is refused with 413 M_TOO_LARGE."""
        obj = signed_device_keys(padding="x" * 20_000)
        with pytest.raises(InvalidKeysError) as caught:
            parse_device_keys(obj)
        assert (caught.value.http_status, caught.value.errcode) == (413, Codes.TOO_LARGE)

    @settings(max_examples=25, deadline=None)
    @given(st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in ("signatures", "unsigned")),
                           st.one_of(st.text(max_size=20), st.integers(-(2**53) + 1, 2**53 - 1), st.booleans()),
                           max_size=4))
    def test_signed_objects_verify_property(self, extra: dict[str, Any]) -> None:
        """Any signed object verifies with the signer's key and fails once one field changes."""
        obj = {**extra, "user_id": USER, "device_id": DEVICE, "algorithms": [],
               "keys": {f"ed25519:{DEVICE}": encode_verify_key_base64(get_verify_key(KEY))}}
        signed = sign_json(obj, USER, KEY, key_id=f"ed25519:{DEVICE}")
        verify_device_keys(parse_device_keys(signed))
        tampered = copy.deepcopy(signed)
        tampered["user_id"] = "@mallory:example.org"
        with pytest.raises(InvalidKeysError):
            verify_signed_by(tampered, USER, f"ed25519:{DEVICE}", obj["keys"][f"ed25519:{DEVICE}"])


class OneTimeKeyTests:
    def test_parse_strings_and_objects(self) -> None:
        keys = parse_one_time_keys({"curve25519:AAA": "k1", "signed_curve25519:BBB": {"key": "k2", "signatures": {}}})
        assert [(k.algorithm, k.key_id, k.full_id) for k in keys] == [
            ("curve25519", "AAA", "curve25519:AAA"),
            ("signed_curve25519", "BBB", "signed_curve25519:BBB"),
        ]

    @pytest.mark.parametrize(
        "value",
        [
            [],
            {"nocolon": "k"},
            {":id": "k"},
            {"alg:": "k"},
            {"alg:id": ""},
            {"alg:id": 5},
            {"alg:id": {"signatures": {}}},
            {"alg:id": {"key": 5}},
            {"alg:id": {"key": "k", "signatures": "x"}},
            {"alg:id": {"key": "k", "fallback": 1}},
            {"alg:" + "x" * 300: "k"},
        ],
    )
    def test_malformed(self, value: Any) -> None:
        with pytest.raises(InvalidKeysError):
            parse_one_time_keys(value)

    def test_too_many(self) -> None:
        with pytest.raises(InvalidKeysError) as caught:
            parse_one_time_keys({f"alg:{i}": "k" for i in range(MAX_KEYS_PER_UPLOAD + 1)})
        assert caught.value.http_status == 413

    def test_fallback_one_per_algorithm(self) -> None:
        assert len(parse_fallback_keys({"a:1": {"key": "k", "fallback": True}, "b:1": "k"})) == 2
        with pytest.raises(InvalidKeysError):
            parse_fallback_keys({"a:1": "k", "a:2": "k"})

    def test_split_and_canonical(self) -> None:
        assert split_key_id("signed_curve25519:AA:BB") == ("signed_curve25519", "AA:BB")
        assert canonical_key_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
        with pytest.raises(InvalidKeysError):
            canonical_key_json({"x": 1.5})
        assert isinstance(InvalidKeysError("x"), MatrixError)
