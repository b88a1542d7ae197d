"""The checks a server runs on a PDU it receives, as pure steps (server-server API, "Checks
performed on receipt of a PDU" steps 1-3, and "Validating hashes and signatures on received events").

Theory of operation (sans-I/O, h11-style): the host drives three steps and does the key lookups.

1. :func:`parse_pdu` — format: the PDU must be valid for its room's version (required keys, types,
   identifier sizes, whole event ≤ 65,536 bytes); the event ID is computed (v3+) or read (v1/v2).
   Failure: the PDU is dropped (:class:`~sc_proto.errors.InvalidEventError`, 400/413).
2. :func:`signature_checks` names the ``(server, key_id)`` signatures that must be verified: the
   sender's server; in rooms v1/v2 also the server of the event ID's domain; for an
   ``m.room.member`` event with ``content.join_authorised_via_users_server`` (rooms v8+) also that
   user's server. Only ``ed25519`` keys are considered. The host fetches each key valid at
   :func:`sc_proto.federation.keys.key_validity_ts` and passes those it found to :func:`verify_signatures`: keys it could not
   find (unknown or expired) are skipped, as the spec says, but every required server needs at least
   one valid signature and every known key's signature must verify. Failure: dropped
   (:class:`~sc_proto.errors.SignatureError`, 401 ``M_UNAUTHORIZED``).
3. :func:`apply_content_hash` — a content hash mismatch means we were given a redacted copy (or a
   tampered one): the event continues as its redacted form, with the same event ID.

Invariant: nothing here reads a clock or a key store; the same inputs give the same answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sc_proto.auth.membership import join_authorising_server
from sc_proto.crypto.keys import VerifyKey
from sc_proto.crypto.signing import verify_event_signature
from sc_proto.errors import InvalidEventError, InvalidIdentifierError, SignatureError
from sc_proto.events.hashes import check_content_hash, compute_event_id
from sc_proto.events.model import Event
from sc_proto.events.redaction import redact
from sc_proto.events.validation import MAX_AUTH_EVENTS, MAX_PREV_EVENTS, validate_pdu
from sc_proto.identifiers import EventID, UserID
from sc_proto.room_versions import EventFormat, RoomVersion

__all__ = [
    "HashCheck",
    "SignatureCheck",
    "apply_content_hash",
    "parse_pdu",
    "required_signers",
    "signature_checks",
    "verify_signatures",
]

_ED25519 = "ed25519:"


@dataclass(frozen=True)
class SignatureCheck:
    """One signature the host must look up a key for.

    Attributes:
        server_name: the signing server.
        key_id: the key ID the event carries a signature under (``ed25519:...``).
    """

    server_name: str
    key_id: str


@dataclass(frozen=True)
class HashCheck:
    """The outcome of step 3.

    Attributes:
        event: the event to process further: as received, or its redacted copy.
        redacted: whether the content hash did not match (``event`` is the redacted copy).
    """

    event: Event
    redacted: bool


def parse_pdu(pdu: object, room_version: RoomVersion, *, enforce_ref_limits: bool = True) -> Event:
    """Step 1: validates a received PDU for ``room_version`` and builds the event.

    Args:
        pdu: the PDU as decoded JSON.
        room_version: its room's version (known to the host from the room, or from the create
            event's content for a new room).
        enforce_ref_limits: check the 20 ``prev_events`` / 10 ``auth_events`` limits. ``/backfill``
            answers must not be validated on them (old events may exceed them), so fetchers pass False.

    Raises:
        InvalidEventError: malformed (400 ``M_BAD_JSON``) or too large (413 ``M_TOO_LARGE``).
    """
    if not isinstance(pdu, Mapping):
        raise InvalidEventError("event must be a JSON object")
    if enforce_ref_limits:
        validate_pdu(pdu, room_version)
    else:
        trimmed = dict(pdu)
        for key, limit in (("prev_events", MAX_PREV_EVENTS), ("auth_events", MAX_AUTH_EVENTS)):
            refs = trimmed.get(key)
            if isinstance(refs, list) and len(refs) > limit:
                trimmed[key] = refs[:limit]
        validate_pdu(trimmed, room_version)
        _check_extra_refs(pdu, room_version)
    event_id = compute_event_id(pdu, room_version)
    if room_version.event_format is EventFormat.V1:
        try:
            EventID.parse(event_id)
        except InvalidIdentifierError as e:
            raise InvalidEventError(f"malformed event ID: {e.message}") from e
    return Event(pdu, room_version, event_id)


def _check_extra_refs(pdu: Mapping[str, Any], room_version: RoomVersion) -> None:
    """The references beyond the limits must still be well formed (they were trimmed for validation)."""
    for key in ("prev_events", "auth_events"):
        for ref in pdu.get(key, []):
            ok = isinstance(ref, str) if room_version.event_format is not EventFormat.V1 else (
                isinstance(ref, list) and len(ref) == 2 and isinstance(ref[0], str)
            )
            if not ok:
                raise InvalidEventError(f"malformed entry in '{key}'")


def _domain_of_user(user_id: str) -> str:
    try:
        return UserID.parse(user_id, historical=True).domain
    except InvalidIdentifierError as e:
        raise InvalidEventError(f"malformed sender: {e.message}") from e


def required_signers(event: Event) -> tuple[str, ...]:
    """The servers whose signature the event must carry (step 2), sender's server first.

    Raises:
        InvalidEventError: the sender or (v1/v2) the event ID is malformed.
    """
    servers = [_domain_of_user(event.sender)]
    if event.room_version.event_format is EventFormat.V1:
        try:
            domain = EventID.parse(event.event_id).domain
        except InvalidIdentifierError as e:
            raise InvalidEventError(f"malformed event ID: {e.message}") from e
        if domain is not None:
            servers.append(domain)
    if event.type == "m.room.member":
        via = join_authorising_server(event)
        if via is not None:
            servers.append(via)
    return tuple(dict.fromkeys(servers))


def signature_checks(event: Event, servers: Iterable[str] | None = None) -> tuple[SignatureCheck, ...]:
    """The ``(server, key_id)`` pairs whose keys the host must look up (step 2).

    Args:
        event: the parsed event.
        servers: the servers whose signatures to check (default :func:`required_signers`). A
            membership dance checks fewer: the invitee's server on an invite it countersigned, or
            every required server but ourselves on a restricted join we are about to countersign.

    Raises:
        SignatureError: a required server has no ``ed25519`` signature on the event at all.
        InvalidEventError: the sender or event ID is malformed.
    """
    signatures = event.pdu.get("signatures")
    sigs: Mapping[str, Any] = signatures if isinstance(signatures, Mapping) else {}
    checks: list[SignatureCheck] = []
    for server in _servers(event, servers):
        server_sigs = sigs.get(server)
        key_ids = sorted(k for k in server_sigs if k.startswith(_ED25519)) if isinstance(server_sigs, Mapping) else []
        if not key_ids:
            raise SignatureError(f"event is not signed by {server}")
        checks.extend(SignatureCheck(server, key_id) for key_id in key_ids)
    return tuple(checks)


def verify_signatures(
    event: Event, keys: Mapping[SignatureCheck, VerifyKey], servers: Iterable[str] | None = None
) -> None:
    """Step 2: checks the event's signatures with the keys the host found.

    Args:
        event: the parsed event.
        keys: the verify key of each :class:`SignatureCheck` the host could find valid at
            :func:`sc_proto.federation.keys.key_validity_ts`; missing entries are skipped (unknown or expired keys).
        servers: as for :func:`signature_checks` (the same value must be passed to both).

    Raises:
        SignatureError: a required server has no signature by a known key, or one does not verify.
    """
    wanted = _servers(event, servers)
    checks = signature_checks(event, wanted)
    verified: set[str] = set()
    for check in checks:
        key = keys.get(check)
        if key is None:
            continue
        verify_event_signature(event.pdu, event.room_version, check.server_name, key, key_id=check.key_id)
        verified.add(check.server_name)
    for server in wanted:
        if server not in verified:
            raise SignatureError(f"no signature from {server} by a key valid at the event's time")


def _servers(event: Event, servers: Iterable[str] | None) -> tuple[str, ...]:
    return required_signers(event) if servers is None else tuple(dict.fromkeys(servers))


def apply_content_hash(event: Event) -> HashCheck:
    """Step 3: the event itself when its content hash matches, else its redacted copy (same ID)."""
    if check_content_hash(event.pdu, event.room_version):
        return HashCheck(event, False)
    redacted = redact(event.pdu, event.room_version)
    return HashCheck(Event(redacted, event.room_version, event.event_id), True)
