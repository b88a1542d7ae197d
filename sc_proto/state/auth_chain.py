"""Auth chains over an in-memory map of events.

Theory of operation:
    The ``auth_events`` links of a room's events form a DAG (the *auth DAG*). The *auth chain* of
    an event is every event reachable from it along those links, not counting the event itself.
    Every function here walks the DAG iteratively (an explicit stack, never recursion), so chains
    of any length are fine, and each walk visits every reachable event once: O(V + E).

    The caller supplies ``events_by_id``, a mapping from event ID to :class:`Event`. When a walk
    reaches an ID that is not in the mapping it carries on with the rest and, at the end, raises
    :class:`MissingEventsError` naming *every* missing ID, so a host can load them all in one
    round trip and retry.

Invariants:
    * Functions never mutate their inputs.
    * Results are sets of event IDs; callers never see partially computed sets on error.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from sc_proto.errors import LocalProtocolError
from sc_proto.events.model import Event, StateKey

__all__ = [
    "MissingEventsError",
    "auth_chain_difference",
    "conflicted_subgraph",
    "get_auth_chain",
    "get_auth_closure",
]

_MAX_IDS_IN_MESSAGE = 10


class MissingEventsError(LocalProtocolError):
    """Events needed for an auth-chain computation were not supplied.

    The host should load (or fetch over federation) :attr:`event_ids` and retry.

    Attributes:
        event_ids: every missing event ID found during the walk.
    """

    def __init__(self, event_ids: Iterable[str]) -> None:
        self.event_ids: frozenset[str] = frozenset(event_ids)
        shown = sorted(self.event_ids)[:_MAX_IDS_IN_MESSAGE]
        more = len(self.event_ids) - len(shown)
        suffix = f" and {more} more" if more > 0 else ""
        super().__init__(f"{len(self.event_ids)} missing event(s): {', '.join(shown)}{suffix}")


def _walk(
    start_ids: Iterable[str],
    events_by_id: Mapping[str, Event],
    seen: set[str],
    stop: Collection[str] = (),
    missing: set[str] | None = None,
) -> None:
    """Adds to ``seen`` every event reachable from the auth events of ``start_ids``.

    The starting events are looked up (they must exist) but only added to ``seen`` if they are
    reachable from another start. Events in ``stop`` are neither added nor walked through.
    Missing IDs are collected in ``missing`` (if given) instead of raising.
    """
    stack: list[str] = []
    for start in start_ids:
        ev = events_by_id.get(start)
        if ev is None:
            if missing is not None:
                missing.add(start)
            continue
        stack.extend(ev.auth_event_ids)
    while stack:
        eid = stack.pop()
        if eid in seen or eid in stop:
            continue
        seen.add(eid)
        ev = events_by_id.get(eid)
        if ev is None:
            if missing is not None:
                missing.add(eid)
            continue
        for aid in ev.auth_event_ids:
            if aid not in seen:
                stack.append(aid)


def get_auth_chain(event_ids: Iterable[str], events_by_id: Mapping[str, Event]) -> set[str]:
    """Returns the union of the auth chains of ``event_ids``.

    The given events themselves are included only when one is in the auth chain of another.

    Args:
        event_ids: the events whose auth chains to compute.
        events_by_id: every event of those chains (and the given events), by ID.

    Returns:
        The event IDs of the union of the auth chains.

    Raises:
        MissingEventsError: some event (a given one or one of the chain) is not in
            ``events_by_id``.
    """
    seen: set[str] = set()
    missing: set[str] = set()
    _walk(event_ids, events_by_id, seen, missing=missing)
    if missing:
        raise MissingEventsError(missing)
    return seen


def get_auth_closure(event_ids: Iterable[str], events_by_id: Mapping[str, Event]) -> set[str]:
    """Returns ``event_ids`` together with the union of their auth chains.

    Raises:
        MissingEventsError: some event is not in ``events_by_id``.
    """
    ids = set(event_ids)
    chain = get_auth_chain(ids, events_by_id)
    chain.update(ids)
    return chain


def auth_chain_difference(
    state_sets: Sequence[Mapping[StateKey, str]] | Sequence[Collection[str]],
    events_by_id: Mapping[str, Event],
) -> set[str]:
    """Returns the auth difference of some room states: ``union(C_i) - intersection(C_i)``.

    ``Cᵢ`` is the full auth chain of the state set ``Sᵢ``, taken (like Synapse and the other
    deployed servers) to include the events of ``Sᵢ`` themselves.

    NOTSPEC: the spec's "union of the auth chains for each event in Sᵢ" read literally would leave
    the state events out of ``Cᵢ``; every deployed implementation includes them, and states must
    resolve identically on every server, so we do too. The two readings differ only for events
    that are themselves state in some set.

    Events in every state set (the unconflicted ones) are, with their whole auth chains, in every
    ``Cᵢ``, so they are walked once and used as a stop set for the per-set walks: the cost is one
    walk of the shared history plus one walk per set of what is specific to it.

    Args:
        state_sets: the states, as ``(type, state_key) -> event_id`` maps or as collections of
            event IDs.
        events_by_id: every event of every auth chain involved, by ID.

    Returns:
        The event IDs in some but not all ``Cᵢ``.

    Raises:
        MissingEventsError: some event is not in ``events_by_id``.
    """
    id_sets = [set(s.values()) if isinstance(s, Mapping) else set(s) for s in state_sets]
    if len(id_sets) < 2:
        return set()
    common = id_sets[0].intersection(*id_sets[1:])
    missing: set[str] = set()
    shared: set[str] = set()
    _walk(common, events_by_id, shared, missing=missing)
    shared.update(common)
    per_set: list[set[str]] = []
    for ids in id_sets:
        own = ids - shared
        seen: set[str] = set()
        _walk(own, events_by_id, seen, stop=shared, missing=missing)
        seen.update(own)
        per_set.append(seen)
    if missing:
        raise MissingEventsError(missing)
    return per_set[0].union(*per_set[1:]) - per_set[0].intersection(*per_set[1:])


def conflicted_subgraph(conflicted_ids: Collection[str], events_by_id: Mapping[str, Event]) -> set[str]:
    """Returns the conflicted state subgraph of state resolution v2.1 (room v12).

    That is every event on an ``auth_events`` path from one conflicted event to another, both
    endpoints included: the events that are in the auth closure of some conflicted event *and*
    have some conflicted event in their own auth closure. The conflicted events themselves are
    always included.

    Computed in two linear passes: walk down from the conflicted events to get their closure,
    then walk back up (reversed edges, inside that closure) from the conflicted events.

    Args:
        conflicted_ids: the conflicted state set.
        events_by_id: every event of the auth chains of the conflicted events, by ID.

    Returns:
        The event IDs of the subgraph.

    Raises:
        MissingEventsError: some event is not in ``events_by_id``.
    """
    down = get_auth_closure(conflicted_ids, events_by_id)
    children: dict[str, list[str]] = {}
    for eid in down:
        for aid in events_by_id[eid].auth_event_ids:
            children.setdefault(aid, []).append(eid)
    result: set[str] = set(conflicted_ids)
    stack = list(result)
    while stack:
        eid = stack.pop()
        for child in children.get(eid, ()):
            if child not in result:
                result.add(child)
                stack.append(child)
    return result
