"""sc_proto.federation: transaction envelopes, received-PDU checks (format, required signatures,
hash -> redacted copy) and server ACL evaluation (issue 13, ADR 0014)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sc_proto.crypto.keys import generate_signing_key, get_key_id, get_verify_key
from sc_proto.crypto.signing import sign_event
from sc_proto.errors import InvalidEventError, LocalProtocolError, RemoteProtocolError, SignatureError
from sc_proto.events.builder import build_event
from sc_proto.events.hashes import compute_event_id
from sc_proto.federation import (
    EDU,
    SignatureCheck,
    apply_content_hash,
    build_transaction,
    is_server_allowed_by_acl,
    key_validity_ts,
    parse_pdu,
    parse_transaction,
    required_signers,
    signature_checks,
    verify_signatures,
)
from sc_proto.room_versions import RoomVersions

V10 = RoomVersions.V10
V1 = RoomVersions.V1
REMOTE = "remote.example:8448"
KEY = generate_signing_key("r1")
OTHER_KEY = generate_signing_key("o1")


def pdu(
    rv: Any = V10, *, sender: str = f"@rita:{REMOTE}", content: dict[str, Any] | None = None, signer: str = REMOTE,
    key: Any = KEY, etype: str = "m.room.message", state_key: str | None = None, **extra: Any,
) -> dict[str, Any]:
    built = build_event(
        room_version=rv, room_id=f"!room:{REMOTE}", type=etype, sender=sender,
        content=content if content is not None else {"body": "hi", "msgtype": "m.text"}, state_key=state_key,
        prev_event_ids=["$" + "a" * 43] if rv is V10 else [], auth_event_ids=[], depth=3,
        origin_server_ts=1_000, event_id_localpart="abc" if rv is V1 else None, **extra,
    )
    return sign_event(built, rv, signer, key, key_id=get_key_id(key))


class TestTransaction:
    def test_round_trip(self) -> None:
        """build_transaction's body parses back to the same PDUs and EDUs."""
        body = build_transaction(REMOTE, 5, [pdu()], [EDU("m.typing", {"room_id": "!r:x", "typing": True})])
        txn = parse_transaction("t1", body)
        assert (txn.origin, txn.origin_server_ts, len(txn.pdus), txn.edus[0].edu_type) == (REMOTE, 5, 1, "m.typing")

    @pytest.mark.parametrize(
        "body",
        [
            [],
            {"origin_server_ts": 1, "pdus": []},
            {"origin": "bad host!", "origin_server_ts": 1, "pdus": []},
            {"origin": REMOTE, "origin_server_ts": "1", "pdus": []},
            {"origin": REMOTE, "origin_server_ts": True, "pdus": []},
            {"origin": REMOTE, "origin_server_ts": 1},
            {"origin": REMOTE, "origin_server_ts": 1, "pdus": {}},
            {"origin": REMOTE, "origin_server_ts": 1, "pdus": [1]},
            {"origin": REMOTE, "origin_server_ts": 1, "pdus": [{}] * 51},
            {"origin": REMOTE, "origin_server_ts": 1, "pdus": [], "edus": [{}] * 101},
            {"origin": REMOTE, "origin_server_ts": 1, "pdus": [], "edus": "x"},
        ],
    )
    def test_malformed_envelopes_are_400(self, body: Any) -> None:
        """Bad types, missing keys and over-limit lists are 400 M_BAD_JSON."""
        with pytest.raises(RemoteProtocolError) as e:
            parse_transaction("t1", body)
        assert e.value.http_status == 400

    def test_limits_are_inclusive(self) -> None:
        """Exactly 50 PDUs and 100 EDUs are accepted; malformed EDUs are dropped and counted."""
        edus = [{"edu_type": "m.x", "content": {}}] * 99 + [{"edu_type": 1}]
        txn = parse_transaction("t", {"origin": REMOTE, "origin_server_ts": 1, "pdus": [{}] * 50, "edus": edus})
        assert (len(txn.pdus), len(txn.edus), txn.dropped_edus) == (50, 99, 1)

    @given(
        st.lists(st.dictionaries(st.text(max_size=5), st.integers(), max_size=3), max_size=50),
        st.lists(st.tuples(st.text(min_size=1, max_size=10), st.dictionaries(st.text(max_size=5), st.booleans())), max_size=100),
        st.integers(min_value=0, max_value=2**53),
    )
    def test_build_parse_round_trip(self, pdus: list[dict[str, int]], edus: list[Any], ts: int) -> None:
        """Property: any buildable transaction parses back to the same PDUs, EDUs and timestamp."""
        body = build_transaction(REMOTE, ts, pdus, [EDU(t, c) for t, c in edus])
        txn = parse_transaction("t", body)
        assert [dict(p) for p in txn.pdus] == pdus
        assert [(e.edu_type, dict(e.content)) for e in txn.edus] == [(t, c) for t, c in edus]
        assert (txn.origin_server_ts, txn.dropped_edus) == (ts, 0)

    def test_build_refuses_too_many(self) -> None:
        """The sender side must batch: more than 50 PDUs is a local error."""
        with pytest.raises(LocalProtocolError):
            build_transaction(REMOTE, 1, [{}] * 51)


class TestPduChecks:
    def test_valid_pdu_passes(self) -> None:
        """A well-formed PDU signed by its sender's server passes every step unchanged."""
        event = parse_pdu(pdu(), V10)
        checks = signature_checks(event)
        assert checks == (SignatureCheck(REMOTE, get_key_id(KEY)),)
        verify_signatures(event, {checks[0]: get_verify_key(KEY)})
        result = apply_content_hash(event)
        assert not result.redacted and result.event.pdu == event.pdu

    def test_malformed_and_oversized(self) -> None:
        """A missing key is 400; an event over 65,536 bytes is 413 M_TOO_LARGE."""
        bad = pdu()
        del bad["sender"]
        with pytest.raises(InvalidEventError):
            parse_pdu(bad, V10)
        big = pdu(content={"body": "x" * 70_000})
        with pytest.raises(InvalidEventError) as e:
            parse_pdu(big, V10)
        assert e.value.http_status == 413
        with pytest.raises(InvalidEventError):
            parse_pdu([1], V10)

    def test_ref_limits_can_be_relaxed_for_backfill(self) -> None:
        """21 prev events fail /send validation but pass with enforce_ref_limits=False (spec: backfill)."""
        many = pdu()
        many["prev_events"] = ["$" + chr(65 + i) * 43 for i in range(21)]
        with pytest.raises(InvalidEventError):
            parse_pdu(many, V10)
        assert parse_pdu(many, V10, enforce_ref_limits=False).event_id == compute_event_id(many, V10)
        many["prev_events"].append(5)
        with pytest.raises(InvalidEventError):
            parse_pdu(many, V10, enforce_ref_limits=False)

    def test_bad_signature_is_refused(self) -> None:
        """A signature made with another key under the same key ID does not verify."""
        forged = pdu(key=OTHER_KEY)
        forged["signatures"] = {REMOTE: {get_key_id(KEY): forged["signatures"][REMOTE][get_key_id(OTHER_KEY)]}}
        event = parse_pdu(forged, V10)
        with pytest.raises(SignatureError):
            verify_signatures(event, {SignatureCheck(REMOTE, get_key_id(KEY)): get_verify_key(KEY)})

    def test_signature_from_wrong_server_is_refused(self) -> None:
        """Signed only by a third server: the sender's server signature is required."""
        event = parse_pdu(pdu(signer="evil.example"), V10)
        with pytest.raises(SignatureError):
            signature_checks(event)

    def test_unknown_keys_are_skipped_but_one_is_needed(self) -> None:
        """A required server whose keys were all unknown (not passed) fails."""
        event = parse_pdu(pdu(), V10)
        with pytest.raises(SignatureError):
            verify_signatures(event, {})

    def test_v1_requires_event_id_domain(self) -> None:
        """Rooms v1: the event ID's server must sign too when it differs from the sender's."""
        raw = pdu(V1)
        raw["event_id"] = "$abc:other.example"
        event = parse_pdu(raw, V1)
        assert required_signers(event) == (REMOTE, "other.example")
        with pytest.raises(SignatureError):
            signature_checks(event)

    def test_restricted_join_requires_authorising_server(self) -> None:
        """join_authorised_via_users_server adds that user's server to the required signers."""
        content = {"membership": "join", "join_authorised_via_users_server": "@a:auth.example"}
        event = parse_pdu(pdu(etype="m.room.member", state_key=f"@rita:{REMOTE}", content=content), V10)
        assert required_signers(event) == (REMOTE, "auth.example")
        with pytest.raises(SignatureError):
            signature_checks(event)

    def test_chosen_servers_only(self) -> None:
        """``servers``: a restricted join is checked without the authorising server (about to
        countersign it), and an explicitly named server must still have signed."""
        content = {"membership": "join", "join_authorised_via_users_server": "@a:auth.example"}
        event = parse_pdu(pdu(etype="m.room.member", state_key=f"@rita:{REMOTE}", content=content), V10)
        checks = signature_checks(event, [REMOTE])
        assert checks == (SignatureCheck(REMOTE, get_key_id(KEY)),)
        verify_signatures(event, {checks[0]: get_verify_key(KEY)}, [REMOTE])
        with pytest.raises(SignatureError):
            verify_signatures(event, {checks[0]: get_verify_key(KEY)})  # default: auth.example too
        with pytest.raises(SignatureError):
            signature_checks(event, ["third.example"])
        with pytest.raises(SignatureError):
            verify_signatures(event, {checks[0]: get_verify_key(OTHER_KEY)}, [REMOTE])

    def test_hash_mismatch_gives_redacted_copy(self) -> None:
        """Content changed after signing: the signature (over the redacted form) holds, the hash does
        not, so the redacted copy continues with the same event ID."""
        tampered = copy.deepcopy(pdu())
        tampered["content"]["body"] = "changed"
        event = parse_pdu(tampered, V10)
        verify_signatures(event, {SignatureCheck(REMOTE, get_key_id(KEY)): get_verify_key(KEY)})
        result = apply_content_hash(event)
        assert result.redacted and result.event.event_id == event.event_id
        assert dict(result.event.content) == {}

    def test_key_validity_time(self) -> None:
        """v5+ rooms check keys at origin_server_ts; older rooms accept any published key (0)."""
        event, old = parse_pdu(pdu(), V10), parse_pdu(pdu(V1), V1)
        assert key_validity_ts(event.room_version, event.origin_server_ts) == 1_000
        assert key_validity_ts(old.room_version, old.origin_server_ts) == 0


class TestServerAcl:
    def test_no_acl_allows(self) -> None:
        """No m.room.server_acl in state: everyone is allowed."""
        assert is_server_allowed_by_acl("anyone.example", None)

    def test_rules_in_order(self) -> None:
        """deny beats allow; ports are ignored; globs are case-insensitive; missing allow denies all."""
        acl = {"allow": ["*.good.example", "exact.example"], "deny": ["bad.good.example"]}
        assert is_server_allowed_by_acl("a.GOOD.example:8448", acl)
        assert is_server_allowed_by_acl("exact.example", acl)
        assert not is_server_allowed_by_acl("bad.good.example:443", acl)
        assert not is_server_allowed_by_acl("other.example", acl)
        assert not is_server_allowed_by_acl("x.example", {"deny": []})
        assert is_server_allowed_by_acl("ab.example", {"allow": ["a?.example"]})
        assert not is_server_allowed_by_acl("abc.example", {"allow": ["a?.example"]})

    def test_ip_literals(self) -> None:
        """allow_ip_literals false denies IPv4 and IPv6 literals; any non-boolean counts as true."""
        assert not is_server_allowed_by_acl("1.2.3.4", {"allow": ["*"], "allow_ip_literals": False})
        assert not is_server_allowed_by_acl("[::1]:8448", {"allow": ["*"], "allow_ip_literals": False})
        assert is_server_allowed_by_acl("1.2.3.4", {"allow": ["*"], "allow_ip_literals": "no"})

    def test_malformed_entries_and_names(self) -> None:
        """Non-string globs are ignored, non-list fields count as empty, bad names are denied."""
        assert is_server_allowed_by_acl("a.example", {"allow": [5, "*"], "deny": "a.example"})
        assert not is_server_allowed_by_acl("not a server!", {"allow": ["*"]})

    @given(st.from_regex(r"[a-z]{1,10}\.example", fullmatch=True))
    def test_star_allows_and_deny_wins(self, name: str) -> None:
        """Property: allow ['*'] admits any valid name; denying the same name always wins."""
        assert is_server_allowed_by_acl(name, {"allow": ["*"]})
        assert not is_server_allowed_by_acl(name, {"allow": ["*"], "deny": [name.upper()]})
