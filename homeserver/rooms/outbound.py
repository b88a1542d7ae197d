"""The ``events`` stream as the federation sender reads it (:class:`~homeserver.api.services.OutboundEventsAPI`).

Theory of operation (DESIGN.md 2.4, last step: "``federation/sender`` reads rows after its last
position and fans out"):

* :meth:`OutboundEventReader.get_outbound_events` reads timeline events (no outliers, soft-failed or
  rejected events) with ``after < stream_ordering <= current``, where ``current`` is the events
  stream's position: every lower ordering has finished, so a page never skips a row that commits
  later. Events of other servers are examined but not returned (we only send our own).
* An event's destinations are the servers with members joined in the state *after* the event (its
  ``state_group_after``: a join reaches the joiner's server, a message reaches who was there when it
  was sent, not who is there when the sender catches up), plus the server of a membership event's
  target (an invitee, or a kicked, banned or leaving user, who is no longer joined afterwards).
* Joined servers are cached per state group: consecutive messages in a room share one group, so a
  busy room costs one state read per state change, not per event.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from homeserver.api.services import OutboundEvents, OutboundPDU
from homeserver.identity import LocalServer, domain_of
from homeserver.storage.ids import StreamPositionTracker
from homeserver.storage.stores.events import EventStore, StoredEvent
from homeserver.storage.stores.state_groups import StateGroupStore

MEMBER = "m.room.member"
JOIN = "join"

LOCAL_UNSIGNED_KEYS = frozenset({"transaction_id", "prev_content", "prev_sender", "replaces_state", "redacted_because"})
"""``unsigned`` keys that describe the event for our own clients and never go over federation."""


def federation_pdu(stored: StoredEvent) -> dict[str, Any]:
    """The PDU of a stored event as sent to other servers (local-only ``unsigned`` keys removed)."""
    pdu = stored.event.get_pdu_json()
    unsigned = pdu.get("unsigned")
    if isinstance(unsigned, dict):
        kept = {k: v for k, v in unsigned.items() if k not in LOCAL_UNSIGNED_KEYS}
        if kept:
            pdu["unsigned"] = kept
        else:
            del pdu["unsigned"]
    return pdu


class OutboundEventReader:
    """Reads our events after a stream position, each with its destination servers.

    Args:
        server_name: our server name (which events are ours).
        events: the event store.
        state_groups: the state-group store (state after each event).
        tracker: the events stream's position tracker (how far it is safe to read).
        cache_size: state groups whose joined servers are remembered.
    """

    def __init__(
        self,
        server_name: str,
        events: EventStore,
        state_groups: StateGroupStore,
        tracker: StreamPositionTracker,
        cache_size: int = 1024,
    ) -> None:
        self._local = LocalServer(server_name)
        self._events = events
        self._state_groups = state_groups
        self._tracker = tracker
        self._servers_by_group: OrderedDict[int, frozenset[str]] = OrderedDict()
        self._cache_size = cache_size

    def current_position(self) -> int:
        """The events stream's position (every lower ordering has finished)."""
        return self._tracker.current()

    async def get_outbound_events(self, after: int, limit: int) -> OutboundEvents:
        """Our timeline events with ``after < stream_ordering``, examining at most ``limit`` rows.

        Returns:
            ``upto`` (where the next page starts) and our events among the rows examined.
        """
        upto = self._tracker.current()
        if upto <= after or limit <= 0:
            return OutboundEvents(after, [])
        rows = await self._events.get_timeline_senders_after(after, upto, limit)
        if len(rows) >= limit:
            upto = rows[-1][0]
        ours = [event_id for _, event_id, sender in rows if self._local.is_mine(sender)]
        stored = await self._events.get_events(ours)
        found = [stored[e] for e in ours if e in stored]
        return OutboundEvents(upto, [await self._outbound(s) for s in found])

    async def get_pdus(self, stream_orderings: Sequence[int]) -> list[OutboundPDU]:
        """The events at ``stream_orderings`` (unknown ones left out), in that order."""
        return [await self._outbound(s) for s in await self._events.get_events_by_stream(stream_orderings)]

    async def _outbound(self, stored: StoredEvent) -> OutboundPDU:
        event = stored.event
        destinations = set(await self._joined_servers(stored.state_group_after))
        if event.type == MEMBER and event.state_key is not None:
            target = domain_of(event.state_key)
            if target is not None:
                destinations.add(target)
        return OutboundPDU(
            stream_ordering=stored.stream_ordering,
            room_id=event.room_id,
            event_id=event.event_id,
            pdu=federation_pdu(stored),
            destinations=frozenset(destinations),
        )

    async def _joined_servers(self, group_id: int | None) -> frozenset[str]:
        if group_id is None:
            return frozenset()
        cached = self._servers_by_group.get(group_id)
        if cached is not None:
            self._servers_by_group.move_to_end(group_id)
            return cached
        state = await self._state_groups.get_state(group_id)
        member_ids = {key[1]: event_id for key, event_id in state.items() if key[0] == MEMBER}
        members = await self._events.get_events(member_ids.values())
        servers: set[str] = set()
        for user_id, event_id in member_ids.items():
            member = members.get(event_id)
            if member is not None and member.event.membership == JOIN:
                domain = domain_of(user_id)
                if domain is not None:
                    servers.add(domain)
        found = frozenset(servers)
        self._servers_by_group[group_id] = found
        while len(self._servers_by_group) > self._cache_size:
            self._servers_by_group.popitem(last=False)
        return found
