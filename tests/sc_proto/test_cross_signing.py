"""Tests for sc_proto.e2ee.cross_signing: key parsing, signature checks, signed-object comparison."""

from __future__ import annotations

import copy
from typing import Any

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sc_proto.crypto.keys import encode_base64
from sc_proto.e2ee.cross_signing import (
    MASTER,
    SELF_SIGNING,
    USER_SIGNING,
    CrossSigningError,
    check_same_object,
    device_ed25519_key,
    key_id_for_public_key,
    new_signatures,
    parse_cross_signing_key,
    sign_object,
    signable_bytes,
    verify_signature,
)
from sc_proto.errors import Codes

ALICE = "@alice:example.org"


def make_key(usage: str, user_id: str = ALICE, seed: int = 1) -> tuple[nacl.signing.SigningKey, dict[str, Any]]:
    private = nacl.signing.SigningKey(bytes([seed]) * 32)
    public = encode_base64(bytes(private.verify_key))
    return private, {"user_id": user_id, "usage": [usage], "keys": {f"ed25519:{public}": public}}


def pub(key: dict[str, Any]) -> str:
    (value,) = key["keys"].values()
    return str(value)


class ParseTests:
    def test_valid_master_key(self) -> None:
        """A well-formed key parses; key ID and public key are exposed; the JSON is a copy."""
        _, key = make_key(MASTER)
        parsed = parse_cross_signing_key(key, MASTER, user_id=ALICE)
        assert parsed.user_id == ALICE
        assert parsed.usage == (MASTER,)
        assert parsed.public_key == pub(key)
        assert parsed.key_id == key_id_for_public_key(pub(key))
        key["usage"].append("changed")
        assert parsed.json["usage"] == [MASTER]

    def test_signature_by(self) -> None:
        """signature_by returns the signature stored under user and key ID, or None."""
        master_priv, master = make_key(MASTER)
        _, ssk = make_key(SELF_SIGNING, seed=2)
        signed = sign_object(ssk, ALICE, key_id_for_public_key(pub(master)), master_priv)
        parsed = parse_cross_signing_key(signed, SELF_SIGNING)
        assert parsed.signature_by(ALICE, key_id_for_public_key(pub(master))) is not None
        assert parsed.signature_by(ALICE, "ed25519:other") is None
        assert parsed.signature_by("@bob:x", key_id_for_public_key(pub(master))) is None

    @pytest.mark.parametrize(
        "mutate",
        [
            lambda k: k.pop("user_id"),
            lambda k: k.update(user_id=5),
            lambda k: k.update(user_id="not a user"),
            lambda k: k.update(user_id="@bob:example.org"),
            lambda k: k.pop("usage"),
            lambda k: k.update(usage="master"),
            lambda k: k.update(usage=[]),
            lambda k: k.update(usage=[1]),
            lambda k: k.update(usage=["self_signing"]),
            lambda k: k.update(usage=["master"] * 17),
            lambda k: k.pop("keys"),
            lambda k: k.update(keys={}),
            lambda k: k.update(keys=[]),
            lambda k: k["keys"].update({"ed25519:other": "other"}),
            lambda k: k.update(keys={"curve25519:" + pub(k): pub(k)}),
            lambda k: k.update(keys={"ed25519:AAAA": pub(k)}),
            lambda k: k.update(keys={"ed25519:" + pub(k): 5}),
            lambda k: k.update(keys={"ed25519:abc": "abc"}),
            lambda k: k.update(keys={"ed25519:" + "A" * 44: "A" * 44}),
            lambda k: k.update(signatures=[]),
            lambda k: k.update(signatures={ALICE: "sig"}),
            lambda k: k.update(signatures={ALICE: {"ed25519:x": 5}}),
            lambda k: k.update(extra=1.5),
        ],
    )
    def test_malformed_keys(self, mutate: Any) -> None:
        """Every malformed key is a CrossSigningError (400), never KeyError/TypeError/ValueError."""
        _, key = make_key(MASTER)
        mutate(key)
        with pytest.raises(CrossSigningError) as info:
            parse_cross_signing_key(key, MASTER, user_id=ALICE)
        assert info.value.http_status == 400

    @pytest.mark.parametrize("value", [None, [], "key", 5])
    def test_not_an_object(self, value: Any) -> None:
        with pytest.raises(CrossSigningError):
            parse_cross_signing_key(value, MASTER)

    def test_extra_usages_allowed(self) -> None:
        """A key may list more usages than the one asked for."""
        _, key = make_key(MASTER)
        key["usage"] = [MASTER, "org.example.future"]
        assert parse_cross_signing_key(key, MASTER).usage == (MASTER, "org.example.future")


class SignatureTests:
    def test_sign_and_verify(self) -> None:
        """A master-key signature of the self-signing key verifies; unsigned/signatures are not covered."""
        master_priv, master = make_key(MASTER)
        _, ssk = make_key(SELF_SIGNING, seed=2)
        master_id = key_id_for_public_key(pub(master))
        signed = sign_object(ssk, ALICE, master_id, master_priv)
        verify_signature(signed, ALICE, master_id, pub(master))
        signed["unsigned"] = {"x": 1}
        signed["signatures"]["@other:x"] = {"ed25519:a": "b"}
        verify_signature(signed, ALICE, master_id, pub(master))

    def test_tampered_object_fails(self) -> None:
        master_priv, master = make_key(MASTER)
        _, usk = make_key(USER_SIGNING, seed=3)
        master_id = key_id_for_public_key(pub(master))
        signed = sign_object(usk, ALICE, master_id, master_priv)
        signed["usage"] = [SELF_SIGNING]
        with pytest.raises(CrossSigningError) as info:
            verify_signature(signed, ALICE, master_id, pub(master))
        assert info.value.errcode == Codes.INVALID_SIGNATURE

    def test_wrong_key_fails(self) -> None:
        master_priv, master = make_key(MASTER)
        _, other = make_key(MASTER, seed=9)
        _, ssk = make_key(SELF_SIGNING, seed=2)
        master_id = key_id_for_public_key(pub(master))
        signed = sign_object(ssk, ALICE, master_id, master_priv)
        with pytest.raises(CrossSigningError) as info:
            verify_signature(signed, ALICE, master_id, pub(other))
        assert info.value.errcode == Codes.INVALID_SIGNATURE

    @pytest.mark.parametrize("signature", ["", "!!!", "AAAA", encode_base64(b"x" * 63), encode_base64(b"x" * 64)])
    def test_malformed_or_wrong_signature(self, signature: str) -> None:
        _, master = make_key(MASTER)
        _, ssk = make_key(SELF_SIGNING, seed=2)
        master_id = key_id_for_public_key(pub(master))
        ssk["signatures"] = {ALICE: {master_id: signature}}
        with pytest.raises(CrossSigningError) as info:
            verify_signature(ssk, ALICE, master_id, pub(master))
        assert info.value.errcode == Codes.INVALID_SIGNATURE

    def test_missing_signature(self) -> None:
        _, master = make_key(MASTER)
        _, ssk = make_key(SELF_SIGNING, seed=2)
        with pytest.raises(CrossSigningError) as info:
            verify_signature(ssk, ALICE, key_id_for_public_key(pub(master)), pub(master))
        assert info.value.errcode == Codes.INVALID_SIGNATURE

    def test_bad_public_key(self) -> None:
        master_priv, _ = make_key(MASTER)
        _, ssk = make_key(SELF_SIGNING, seed=2)
        signed = sign_object(ssk, ALICE, "ed25519:k", master_priv)
        for public in ("short", 5, ""):
            with pytest.raises(CrossSigningError) as info:
                verify_signature(signed, ALICE, "ed25519:k", public)  # type: ignore[arg-type]
            assert info.value.errcode == Codes.INVALID_PARAM

    def test_explicit_signature_argument(self) -> None:
        """A signature passed explicitly is checked instead of the one in the object."""
        master_priv, master = make_key(MASTER)
        _, ssk = make_key(SELF_SIGNING, seed=2)
        master_id = key_id_for_public_key(pub(master))
        good = sign_object(ssk, ALICE, master_id, master_priv)["signatures"][ALICE][master_id]
        verify_signature(ssk, ALICE, master_id, pub(master), signature=good)

    @settings(max_examples=30, deadline=None)
    @given(st.dictionaries(st.text(min_size=1, max_size=8), st.integers(-(2**53) + 1, 2**53 - 1), max_size=5))
    def test_sign_then_verify_roundtrip(self, extra: dict[str, int]) -> None:
        """Any canonical object signed by a key verifies with its public key (property)."""
        private = nacl.signing.SigningKey(b"\x07" * 32)
        public = encode_base64(bytes(private.verify_key))
        obj = {k: v for k, v in extra.items() if k not in ("signatures", "unsigned")}
        signed = sign_object(obj, ALICE, "ed25519:dev", private)
        verify_signature(signed, ALICE, "ed25519:dev", public)
        assert signable_bytes(signed) == signable_bytes(obj)

    def test_sign_object_keeps_input(self) -> None:
        private, key = make_key(MASTER)
        before = copy.deepcopy(key)
        sign_object(key, ALICE, "ed25519:x", private)
        assert key == before

    def test_non_canonical_object(self) -> None:
        private, key = make_key(MASTER)
        key["float"] = 1.5
        with pytest.raises(CrossSigningError):
            sign_object(key, ALICE, "ed25519:x", private)


class ComparisonTests:
    def test_same_object_ignores_signatures_and_unsigned(self) -> None:
        _, stored = make_key(MASTER)
        uploaded = copy.deepcopy(stored)
        uploaded["signatures"] = {ALICE: {"ed25519:DEV": "sig"}}
        uploaded["unsigned"] = {"device_display_name": "x"}
        check_same_object(uploaded, stored)

    def test_different_object_fails(self) -> None:
        _, stored = make_key(MASTER)
        uploaded = copy.deepcopy(stored)
        uploaded["usage"] = [MASTER, SELF_SIGNING]
        with pytest.raises(CrossSigningError) as info:
            check_same_object(uploaded, stored)
        assert info.value.errcode == Codes.INVALID_SIGNATURE
        with pytest.raises(CrossSigningError):
            check_same_object([], stored)  # type: ignore[arg-type]

    def test_new_signatures(self) -> None:
        """Only the signer's signatures that the stored object lacks (or differ) are new."""
        stored = {"a": 1, "signatures": {ALICE: {"ed25519:old": "s1"}}}
        uploaded = {"a": 1, "signatures": {ALICE: {"ed25519:old": "s1", "ed25519:new": "s2"},
                                           "@bob:x": {"ed25519:b": "s3"}}}
        assert new_signatures(uploaded, stored, ALICE) == {"ed25519:new": "s2"}
        assert new_signatures(uploaded, stored, "@bob:x") == {"ed25519:b": "s3"}
        assert new_signatures({"a": 1}, stored, ALICE) == {}
        with pytest.raises(CrossSigningError):
            new_signatures({"signatures": {ALICE: {"k": 1}}}, stored, ALICE)

    def test_device_ed25519_key(self) -> None:
        _, key = make_key(MASTER)
        device = {"keys": {"ed25519:DEV": pub(key), "curve25519:DEV": "c"}}
        assert device_ed25519_key(device, "DEV") == pub(key)
        for bad in ({}, {"keys": []}, {"keys": {"ed25519:DEV": "short"}}, {"keys": {"ed25519:OTHER": pub(key)}}):
            with pytest.raises(CrossSigningError):
                device_ed25519_key(bad, "DEV")
