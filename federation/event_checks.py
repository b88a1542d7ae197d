"""Received-PDU checks with key lookups: drives :mod:`sc_proto.federation.pdu_checks` (steps 1-3 of
"Checks performed on receipt of a PDU") for ``/send`` and for every fetched event.

The sans-I/O library says which ``(server, key_id)`` signatures matter; this module asks the keyring
(:class:`~federation.interfaces.VerifyKeyLookup`) for each key valid at the event's time, skipping
keys the keyring cannot find (unknown or expired, as the spec says), then lets the library verify.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from federation.interfaces import RemoteUnreachable, VerifyKeyLookup
from sc_proto.crypto.keys import VerifyKey
from sc_proto.errors import InvalidEventError, MatrixError, SignatureError
from sc_proto.federation.keys import key_validity_ts
from sc_proto.federation.pdu_checks import (
    HashCheck,
    SignatureCheck,
    apply_content_hash,
    parse_pdu,
    signature_checks,
    verify_signatures,
)
from sc_proto.room_versions import RoomVersion

logger = logging.getLogger(__name__)


class EventChecker:
    """Format, signature and hash checks of received PDUs.

    Args:
        keys: the keyring.
        time_msec: the clock (key validity in rooms before v5).
    """

    def __init__(self, keys: VerifyKeyLookup, time_msec: Callable[[], int]) -> None:
        self._keys = keys
        self._now = time_msec

    async def check(
        self, pdu: Mapping[str, Any], room_version: RoomVersion, *, enforce_ref_limits: bool = True
    ) -> HashCheck:
        """Runs steps 1-3 on ``pdu``.

        Returns:
            The event to process (redacted when its content hash did not match).

        Raises:
            InvalidEventError: malformed or oversized (step 1; 400/413).
            SignatureError: a required signature is missing or does not verify (step 2; 401).
        """
        event = parse_pdu(pdu, room_version, enforce_ref_limits=enforce_ref_limits)
        checks = signature_checks(event)
        at_ts = key_validity_ts(event.room_version, event.origin_server_ts)
        found: dict[SignatureCheck, VerifyKey] = {}
        for check in checks:
            try:
                found[check] = await self._keys.get_verify_key(check.server_name, check.key_id, at_ts)
            except (MatrixError, RemoteUnreachable) as e:
                # Unknown or expired keys are skipped; verify_signatures still needs one per server.
                logger.debug("no key %s of %s: %s", check.key_id, check.server_name, e)
        verify_signatures(event, found)
        result = apply_content_hash(event)
        if result.redacted:
            logger.info("content hash mismatch on %s: using the redacted copy", event.event_id)
        return result


def describe_refusal(error: Exception) -> str:
    """A short, safe reason for a refused PDU (for the ``/send`` answer)."""
    if isinstance(error, (InvalidEventError, SignatureError, MatrixError)):
        return error.message
    return "internal error"
