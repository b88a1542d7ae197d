"""The joining server's checks of a ``send_join`` answer's room state, as pure functions
(server-server API "Joining Rooms": the joining server must check the state and auth chain it was
given; "Checks performed on receipt of a PDU" step 4 for each of their events).

Theory of operation: the host has already run steps 1-3 on every event of the answer
(:mod:`sc_proto.federation.pdu_checks`: format, signatures, content hash). Then
:func:`check_state_against_auth_chain` runs the auth rules on each event (of the state and of the
auth chain) against its own ``auth_events``, which must themselves be in the answer and pass: the
events are decided in rounds, oldest first by depth, until no event is left undecided; an event of
another room, one whose auth events are missing or failed, or one the rules refuse, is dropped with
its reason. A state without a create event that passed is refused as a whole. :func:`joined_servers`
names the servers with joined members in a state (the join's ``servers_in_room``).

Invariant: depths come from the remote server and are only a hint: an event is decided only once
every one of its auth events is, whatever the depths say, so a lying depth can drop events but never
let an unauthorised one through.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sc_proto.auth.rules import build_auth_state, check_auth
from sc_proto.errors import AuthError, Codes, InvalidIdentifierError, RemoteProtocolError
from sc_proto.events.model import Event
from sc_proto.identifiers import UserID
from sc_proto.room_versions import RoomVersion

__all__ = ["JoinStateCheck", "check_state_against_auth_chain", "joined_servers"]


@dataclass(frozen=True)
class JoinStateCheck:
    """The outcome of :func:`check_state_against_auth_chain`.

    Attributes:
        state: the state events that passed, in the order given.
        auth_chain: the auth-chain events that passed, in the order given.
        dropped: ``event_id -> reason`` for every event that did not pass.
    """

    state: list[Event]
    auth_chain: list[Event]
    dropped: dict[str, str] = field(default_factory=dict)


def check_state_against_auth_chain(
    rv: RoomVersion,
    room_id: str,
    state: Sequence[Event],
    auth_chain: Sequence[Event],
    trusted: Sequence[Event] = (),
) -> JoinStateCheck:
    """Runs the auth rules on a room state received with its auth chain (see the module docstring).

    Args:
        trusted: events the host already accepted (stored, not rejected): they count as passed
            without being checked, so received events may name them as auth events (used when
            fetching a PDU's missing auth events; a join has none).

    Raises:
        RemoteProtocolError: 502 ``M_UNKNOWN`` when no valid create event of ``room_id`` remains.
    """
    passed: dict[str, Event] = {e.event_id: e for e in trusted if e.room_id == room_id}
    by_id = {**passed, **{e.event_id: e for e in [*auth_chain, *state] if e.event_id not in passed}}
    create = next(
        (e for e in by_id.values() if e.type == "m.room.create" and e.state_key == "" and e.room_id == room_id), None
    )
    dropped: dict[str, str] = {e: "event of another room" for e, ev in by_id.items() if ev.room_id != room_id}
    pending = sorted(
        (e for e in by_id.values() if e.room_id == room_id and e.event_id not in passed),
        key=lambda e: (e.depth, e.event_id),
    )
    while pending:
        undecided: list[Event] = []
        for event in pending:
            auth_ids = list(event.auth_event_ids)
            if any(a in dropped or a not in by_id for a in auth_ids):
                dropped[event.event_id] = "an auth event is missing or failed"
            elif any(a not in passed for a in auth_ids):
                undecided.append(event)
            else:
                reason = _auth_failure(rv, event, [passed[a] for a in auth_ids], create)
                if reason is None:
                    passed[event.event_id] = event
                else:
                    dropped[event.event_id] = reason
        if len(undecided) == len(pending):
            for event in undecided:  # an auth cycle: never decidable
                dropped[event.event_id] = "its auth events are never decided"
            break
        pending = undecided
    if create is None or create.event_id not in passed:
        raise RemoteProtocolError("The room's state has no valid create event", Codes.UNKNOWN, 502)
    return JoinStateCheck(
        [e for e in state if e.event_id in passed], [e for e in auth_chain if e.event_id in passed], dropped
    )


def _auth_failure(rv: RoomVersion, event: Event, auth_events: Sequence[Event], create: Event | None) -> str | None:
    """Why ``event`` fails against its auth events, or None when it passes."""
    v12_create = create if rv.room_id_from_create_event and event is not create else None
    try:
        check_auth(event, build_auth_state(auth_events, v12_create), rv)
    except AuthError as e:
        return e.reason
    return None


def joined_servers(state: Iterable[Event]) -> list[str]:
    """The servers of the joined members in ``state``, sorted (malformed user IDs are skipped)."""
    servers: set[str] = set()
    for event in state:
        if event.type != "m.room.member" or event.membership != "join" or event.state_key is None:
            continue
        try:
            servers.add(UserID.parse(event.state_key, historical=True).domain)
        except InvalidIdentifierError:
            continue
    return sorted(servers)
