"""Fetching events the core is missing from other servers (implements
:class:`homeserver.api.ports.RemoteEventFetcher`; issue 13, ADR 0014).

Every answer is bounded (at most ``limit`` events, at most :data:`MAX_STATE_IDS` IDs) and every
returned PDU passed the same format, signature and hash checks as a PDU received in ``/send``
(:class:`~federation.event_checks.EventChecker`): a PDU that fails is dropped with a log line, one
whose content hash fails is returned redacted. PDUs of another room than the one asked about are
dropped. Remote failures become the port's errors: 404 ``M_NOT_FOUND`` when the server does not have
it, 502 ``M_UNKNOWN`` when it cannot be reached or answers with garbage.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from federation.event_checks import EventChecker
from federation.interfaces import FederationHttp, JsonDict, RemoteHttpError, RemoteUnreachable
from homeserver.api.services import RoomHistoryAPI
from sc_proto.errors import Codes, InvalidEventError, MatrixError, SignatureError
from sc_proto.room_versions import RoomVersion, get_room_version

logger = logging.getLogger(__name__)

PREFIX = "/_matrix/federation/v1"
MAX_FETCH_LIMIT = 100
"""Largest ``limit`` sent for ``/get_missing_events`` and ``/backfill``."""
MAX_AUTH_CHAIN = 10_000
"""Largest ``auth_chain`` accepted from ``/event_auth`` (each PDU costs key lookups and checks)."""
MAX_STATE_IDS = 100_000
"""Largest ``pdu_ids``/``auth_chain_ids`` list accepted from ``/state_ids``."""


def _path(*parts: str) -> str:
    return PREFIX + "".join("/" + quote(p, safe="") for p in parts)


def _remote_failure(destination: str, error: Exception) -> MatrixError:
    if isinstance(error, RemoteHttpError) and error.status == 404:
        return MatrixError(404, Codes.NOT_FOUND, f"{destination} does not have it")
    return MatrixError(502, Codes.UNKNOWN, f"Remote server {destination} failed")


def _bad_answer(destination: str, what: str) -> MatrixError:
    logger.info("malformed %s answer from %s", what, destination, extra={"destination": destination})
    return MatrixError(502, Codes.UNKNOWN, f"Malformed answer from {destination}")


class RemoteEventFetching:
    """Implements :class:`~homeserver.api.ports.RemoteEventFetcher` over :class:`FederationHttp`.

    Args:
        http: the federation client.
        checker: checks every fetched PDU.
        history: room versions of rooms we know.
    """

    def __init__(self, http: FederationHttp, checker: EventChecker, history: RoomHistoryAPI) -> None:
        self._http = http
        self._checker = checker
        self._history = history

    async def _room_version(self, room_id: object) -> RoomVersion | None:
        if not isinstance(room_id, str):
            return None
        version = await self._history.get_room_version(room_id)
        return get_room_version(version) if version is not None else None

    async def _checked(
        self, destination: str, pdu: object, room_id: str | None, *, enforce_ref_limits: bool = True
    ) -> JsonDict | None:
        """The PDU as it may be used (redacted when its hash failed), or None when it failed checks."""
        if not isinstance(pdu, Mapping):
            return None
        if room_id is not None and pdu.get("room_id") != room_id:
            return None
        rv = await self._room_version(pdu.get("room_id"))
        if rv is None:
            return None
        try:
            checked = await self._checker.check(pdu, rv, enforce_ref_limits=enforce_ref_limits)
        except (InvalidEventError, SignatureError, MatrixError) as e:
            logger.info("dropping a fetched PDU from %s: %s", destination, e.message, extra={"destination": destination})
            return None
        return dict(checked.event.pdu)

    async def _checked_all(
        self, destination: str, pdus: Sequence[object], room_id: str, *, enforce_ref_limits: bool = True
    ) -> list[JsonDict]:
        """:meth:`_checked` on each PDU of ``room_id``; those that fail are left out."""
        out: list[JsonDict] = []
        for pdu in pdus:
            checked = await self._checked(destination, pdu, room_id, enforce_ref_limits=enforce_ref_limits)
            if checked is not None:
                out.append(checked)
        return out

    async def _get(self, destination: str, path: str, args: Mapping[str, Sequence[str]] | None = None) -> JsonDict:
        try:
            return await self._http.get_json(destination, path, args)
        except (RemoteHttpError, RemoteUnreachable) as e:
            raise _remote_failure(destination, e) from None

    async def get_event(self, destination: str, event_id: str) -> JsonDict | None:
        """GET /_matrix/federation/v1/event/{eventId}: the checked PDU, or None."""
        try:
            body = await self._get(destination, _path("event", event_id))
        except MatrixError as e:
            if e.http_status == 404:
                return None
            raise
        pdus = body.get("pdus")
        if not isinstance(pdus, list) or not pdus:
            raise _bad_answer(destination, "event")
        for pdu in pdus[:1]:
            checked = await self._checked(destination, pdu, None)
            if checked is not None and await self._event_id_is(checked, event_id):
                return checked
        return None

    async def _event_id_is(self, pdu: JsonDict, event_id: str) -> bool:
        from sc_proto.events.hashes import compute_event_id

        rv = await self._room_version(pdu.get("room_id"))
        return rv is not None and compute_event_id(pdu, rv) == event_id

    async def get_missing_events(
        self, destination: str, room_id: str, earliest: Sequence[str], latest: Sequence[str], limit: int
    ) -> list[JsonDict]:
        """POST /_matrix/federation/v1/get_missing_events/{roomId}: checked PDUs, at most ``limit``."""
        limit = max(1, min(limit, MAX_FETCH_LIMIT))
        content = {"earliest_events": list(earliest), "latest_events": list(latest), "limit": limit, "min_depth": 0}
        try:
            body = await self._http.post_json(destination, _path("get_missing_events", room_id), content)
        except (RemoteHttpError, RemoteUnreachable) as e:
            raise _remote_failure(destination, e) from None
        events = body.get("events")
        if not isinstance(events, list):
            raise _bad_answer(destination, "get_missing_events")
        return await self._checked_all(destination, events[:limit], room_id)

    async def get_state_ids(self, destination: str, room_id: str, event_id: str) -> tuple[list[str], list[str]]:
        """GET /_matrix/federation/v1/state_ids/{roomId}?event_id=: ``(pdu_ids, auth_chain_ids)``."""
        body = await self._get(destination, _path("state_ids", room_id), {"event_id": [event_id]})
        pdu_ids, auth_ids = body.get("pdu_ids"), body.get("auth_chain_ids")
        if not (_is_id_list(pdu_ids) and _is_id_list(auth_ids)):
            raise _bad_answer(destination, "state_ids")
        assert isinstance(pdu_ids, list) and isinstance(auth_ids, list)
        return list(pdu_ids), list(auth_ids)

    async def backfill(self, destination: str, room_id: str, from_event_ids: Sequence[str], limit: int) -> list[JsonDict]:
        """GET /_matrix/federation/v1/backfill/{roomId}?v=...&limit=: checked PDUs, at most ``limit``."""
        limit = max(1, min(limit, MAX_FETCH_LIMIT))
        args = {"v": list(from_event_ids), "limit": [str(limit)]}
        body = await self._get(destination, _path("backfill", room_id), args)
        pdus = body.get("pdus")
        if not isinstance(pdus, list):
            raise _bad_answer(destination, "backfill")
        # The spec: backfilled PDUs must not be validated on the prev/auth event count limits.
        return await self._checked_all(destination, pdus[:limit], room_id, enforce_ref_limits=False)

    async def get_event_auth(self, destination: str, room_id: str, event_id: str) -> list[JsonDict]:
        """GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}: the event's auth chain as checked
        PDUs of ``room_id``, at most :data:`MAX_AUTH_CHAIN` (a longer answer is refused as malformed)."""
        body = await self._get(destination, _path("event_auth", room_id, event_id))
        chain = body.get("auth_chain")
        if not isinstance(chain, list) or len(chain) > MAX_AUTH_CHAIN:
            raise _bad_answer(destination, "event_auth")
        return await self._checked_all(destination, chain, room_id)


def _is_id_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) <= MAX_STATE_IDS
        and all(isinstance(v, str) and v.startswith("$") and len(v) <= 255 for v in value)
    )
