"""Fetching a received PDU's missing auth events before step 4 (server-server API, "Checks
performed on receipt of a PDU": the auth events a server lacks are fetched from the origin).

Theory of operation (called by the room input in the room's turn, before the PDU's own auth events
are checked):

1. ``GET /event_auth/{roomId}/{eventId}`` through the :class:`~homeserver.api.ports.RemoteEventFetcher`
   port: the origin's auth chain of the PDU; the adapter checked every PDU of it (format,
   signatures, content hash; failures dropped, bad hashes redacted). When that fails, each missing
   auth event is asked for alone (``GET /event/{eventId}``).
2. The chain is judged with :func:`sc_proto.federation.join_checks.check_state_against_auth_chain`:
   each event we lack against its own auth events, oldest first; the auth events it names that we
   hold are taken from our store as already passed (``trusted``; the create event always is), and
   events we stored as rejected are neither trusted nor re-judged, so whatever depends on them fails
   and nothing the origin sends can revive them.
3. Those that passed and that we lack are stored as outliers in one batched transaction; those that
   failed are not stored. The room input then runs step 4 as usual: a PDU still missing an auth
   event, or naming one that failed, is rejected.

Invariant: only events that pass the auth rules against their own auth chain are stored, and the
room's head does not move (outliers change no state).
"""

from __future__ import annotations

import logging

from homeserver.api.ports import JsonDict, RemoteEventFetcher
from homeserver.events.persister import EventPersister
from homeserver.rooms.state_reader import RoomHead
from homeserver.storage.stores.events import EventStore
from sc_proto.errors import InvalidEventError, MatrixError, RemoteProtocolError
from sc_proto.events.model import Event
from sc_proto.federation.join_checks import check_state_against_auth_chain

logger = logging.getLogger(__name__)


async def fetch_missing_auth_events(
    fetcher: RemoteEventFetcher,
    events: EventStore,
    persister: EventPersister,
    origin: str,
    event: Event,
    head: RoomHead,
    missing: set[str],
) -> int:
    """Fetches, checks and stores (as outliers) the auth events of ``event`` named in ``missing``
    and what they need; never raises for a remote failure.

    Returns:
        How many events were stored.
    """
    room_id = event.room_id
    chain = await _fetch_chain(fetcher, origin, event, head, missing)
    if not chain:
        return 0
    referenced = {a for e in chain.values() for a in e.auth_event_ids} | set(chain)
    create_id = head.state.get(("m.room.create", ""))
    if create_id is not None:
        referenced.add(create_id)
    stored = await events.get_events(sorted(referenced))
    trusted = [s.event for s in stored.values() if s.rejected_reason is None]
    received = [ev for e, ev in chain.items() if e not in stored]
    try:
        checked = check_state_against_auth_chain(head.version, room_id, [], received, trusted)
    except RemoteProtocolError:
        logger.info("auth chain of %s from %s has no valid create event", event.event_id, origin,
                    extra={"room_id": room_id})
        return 0
    if checked.dropped:
        logger.info("%d fetched auth events failed the auth rules", len(checked.dropped), extra={"room_id": room_id})
    new = sorted(checked.auth_chain, key=lambda e: (e.depth, e.event_id))
    if new:
        await persister.persist_outliers(head.room, new)
    return len(new)


async def _fetch_chain(
    fetcher: RemoteEventFetcher, origin: str, event: Event, head: RoomHead, missing: set[str]
) -> dict[str, Event]:
    """The origin's auth chain of ``event`` (``/event_auth``; else each missing event by ID)."""
    pdus: list[JsonDict] = []
    try:
        pdus = await fetcher.get_event_auth(origin, event.room_id, event.event_id)
    except MatrixError as e:
        logger.info("event_auth from %s failed: %s", origin, e.errcode, extra={"room_id": event.room_id})
    chain = _parse(pdus, head, event.room_id)
    for event_id in sorted(missing - set(chain)):
        try:
            pdu = await fetcher.get_event(origin, event_id)
        except MatrixError as e:
            logger.info("event from %s failed: %s", origin, e.errcode, extra={"room_id": event.room_id})
            continue
        chain.update({e: ev for e, ev in _parse([pdu] if pdu else [], head, event.room_id).items() if e == event_id})
    return chain


def _parse(pdus: list[JsonDict], head: RoomHead, room_id: str) -> dict[str, Event]:
    out: dict[str, Event] = {}
    for pdu in pdus:
        try:
            parsed = Event.from_pdu(pdu, head.version)
        except InvalidEventError:
            continue
        if parsed.room_id == room_id:
            out[parsed.event_id] = parsed
    return out
