"""Builders of :class:`~sc_proto.events.model.Event` objects for tests.

Events are built with the plain constructor and made-up event IDs (no hashing, no signing), so
tests of the authorization rules and state resolution do not depend on the hashing code.

* :func:`make_event` builds one PDU of any room version (``[id, hashes]`` references for v1-v2,
  bare IDs later; the v12 create event has no ``room_id``).
* :class:`RoomBuilder` grows a room: the create event, the creator's join, power levels and join
  rules, then any events, choosing ``prev_events`` (the builder's extremities) and
  ``auth_events`` (auth events selection against the builder's current state). ``fork()`` gives
  an independent branch for state-resolution tests.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sc_proto.auth.rules import auth_types_for_event, check_auth
from sc_proto.events.model import Event, StateKey
from sc_proto.room_versions import EventFormat, RoomVersion

ALICE = "@alice:example.org"
BOB = "@bob:example.org"
CAROL = "@carol:example.org"
DAVE = "@dave:other.org"
EVE = "@eve:evil.example"

DEFAULT_ROOM_ID = "!room:example.org"

_counter = itertools.count(1)
_MISSING = object()


def new_event_id(room_version: RoomVersion, domain: str = "example.org") -> str:
    """Returns a fresh, unique event ID in the room version's format."""
    n = next(_counter)
    if room_version.event_format is EventFormat.V1:
        return f"${n}:{domain}"
    digest = hashlib.sha256(f"event-{n}".encode()).digest()
    if room_version.event_format is EventFormat.V2:
        text = base64.b64encode(digest).decode()
    else:
        text = base64.urlsafe_b64encode(digest).decode()
    return "$" + text.rstrip("=")


def _ref(room_version: RoomVersion, ref: str | Event) -> Any:
    event_id = ref.event_id if isinstance(ref, Event) else ref
    if room_version.event_format is EventFormat.V1:
        return [event_id, {"sha256": "aGFzaA"}]
    return event_id


def make_event(
    room_version: RoomVersion,
    type: str,
    sender: str,
    content: Any = None,
    state_key: str | None = None,
    *,
    event_id: str | None = None,
    room_id: str | None = DEFAULT_ROOM_ID,
    prev_events: Iterable[str | Event] = (),
    auth_events: Iterable[str | Event] = (),
    depth: int = 1,
    origin_server_ts: int = 1_000,
    redacts: str | None = None,
    extra: Mapping[str, Any] | None = None,
    drop: Iterable[str] = (),
) -> Event:
    """Builds one event.

    Args:
        room_version: the room version (decides the reference format and the ID format).
        type: the event type.
        sender: the sender's user ID.
        content: the content (``{}`` if ``None``; any value, for bad-input tests).
        state_key: the state key (``None`` for a message event).
        event_id: the event ID (a fresh one if ``None``).
        room_id: the room ID; ignored (absent) for the create event of a v12 room.
        prev_events: previous events (IDs or events).
        auth_events: auth events (IDs or events).
        depth: the depth.
        origin_server_ts: the timestamp.
        redacts: for redactions: top-level ``redacts`` (v1-v10) or ``content.redacts`` (v11+).
        extra: more top-level PDU keys (override the defaults).
        drop: top-level keys to remove from the PDU at the end.
    """
    eid = event_id or new_event_id(room_version, sender.partition(":")[2] or "example.org")
    pdu: dict[str, Any] = {
        "type": type,
        "sender": sender,
        "content": {} if content is None else copy.deepcopy(content),
        "depth": depth,
        "origin_server_ts": origin_server_ts,
        "prev_events": [_ref(room_version, r) for r in prev_events],
        "auth_events": [_ref(room_version, r) for r in auth_events],
        "hashes": {"sha256": "aGFzaA"},
        "signatures": {sender.partition(":")[2]: {"ed25519:1": "c2ln"}},
    }
    if not (room_version.room_id_from_create_event and type == "m.room.create"):
        pdu["room_id"] = room_id
    if state_key is not None:
        pdu["state_key"] = state_key
    if room_version.event_format is EventFormat.V1:
        pdu["event_id"] = eid
    if redacts is not None:
        if room_version.updated_redaction_rules and isinstance(pdu["content"], dict):
            pdu["content"]["redacts"] = redacts
        else:
            pdu["redacts"] = redacts
    if extra:
        pdu.update(extra)
    for key in drop:
        pdu.pop(key, None)
    return Event(pdu, room_version, eid)


def default_power_levels(room_version: RoomVersion, creator: str) -> dict[str, Any]:
    """Power-levels content like a room-creation preset (creators unlisted in v12)."""
    content: dict[str, Any] = {
        "users": {} if room_version.privileged_creators else {creator: 100},
        "users_default": 0,
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "events": {"m.room.name": 50, "m.room.power_levels": 100},
    }
    return content


class RoomBuilder:
    """Grows one room for tests, tracking its state, events and forward extremities.

    Attributes:
        room_version: the room's version.
        creator: the create event's sender.
        state: current state, ``(type, state_key) -> Event``.
        events: every event built and applied, by ID.
        timeline: applied events in order.
        extremities: IDs used as ``prev_events`` of the next event.
        room_id: the room ID (for v12, known once :meth:`create` ran).
        create_event: the create event once built.
    """

    def __init__(
        self,
        room_version: RoomVersion,
        creator: str = ALICE,
        *,
        room_id: str | None = None,
        origin_server_ts: int = 1_000,
    ) -> None:
        self.room_version = room_version
        self.creator = creator
        self.state: dict[StateKey, Event] = {}
        self.events: dict[str, Event] = {}
        self.timeline: list[Event] = []
        self.extremities: list[str] = []
        domain = creator.partition(":")[2]
        self.room_id: str = room_id or f"!room{next(_counter)}:{domain}"
        self.create_event: Event | None = None
        self._ts = origin_server_ts
        self._depth = 0

    # --- construction -------------------------------------------------------------------------

    def create(self, content: Mapping[str, Any] | None = None, **extra: Any) -> Event:
        """Builds and applies the create event (``creator`` set before v11)."""
        body: dict[str, Any] = {"room_version": self.room_version.identifier}
        if not self.room_version.implicit_room_creator:
            body["creator"] = self.creator
        body.update(content or {})
        event = self.build("m.room.create", self.creator, body, "", prev=[], auth=[], **extra)
        if self.room_version.room_id_from_create_event:
            self.room_id = event.room_id
        self.create_event = event
        return self.apply(event)

    def initial_state(
        self,
        join_rule: str = "invite",
        power_levels: Mapping[str, Any] | None = None,
        create_content: Mapping[str, Any] | None = None,
    ) -> RoomBuilder:
        """Creates the room: create event, creator's join, power levels and join rules."""
        self.create(create_content)
        self.add("m.room.member", self.creator, {"membership": "join"}, self.creator)
        pl = default_power_levels(self.room_version, self.creator)
        if power_levels is not None:
            pl = dict(power_levels)
        self.add("m.room.power_levels", self.creator, pl, "")
        self.add("m.room.join_rules", self.creator, {"join_rule": join_rule}, "")
        return self

    def build(
        self,
        type: str,
        sender: str,
        content: Any = None,
        state_key: str | None = None,
        *,
        prev: Sequence[str | Event] | None = None,
        auth: Sequence[str | Event] | None = None,
        state: Mapping[StateKey, Event] | None = None,
        **kwargs: Any,
    ) -> Event:
        """Builds (does not apply) an event on top of the builder's state.

        ``prev`` defaults to the extremities; ``auth`` to the auth events selected from
        ``state`` (default: the current state). Other keyword arguments go to :func:`make_event`.
        """
        self._depth += 1
        self._ts += 1
        fields = {"type": type, "sender": sender, "content": content or {}, "state_key": state_key}
        if auth is None:
            source = self.state if state is None else state
            auth = [
                source[key].event_id
                for key in auth_types_for_event(fields, self.room_version)
                if key in source
            ]
        kwargs.setdefault("depth", self._depth)
        kwargs.setdefault("origin_server_ts", self._ts)
        kwargs.setdefault("room_id", self.room_id)
        return make_event(
            self.room_version,
            type,
            sender,
            content,
            state_key,
            prev_events=self.extremities if prev is None else prev,
            auth_events=auth,
            **kwargs,
        )

    def apply(self, event: Event) -> Event:
        """Records ``event``: updates state (for state events) and makes it the extremity."""
        self.events[event.event_id] = event
        self.timeline.append(event)
        if event.state_key is not None:
            self.state[(event.type, event.state_key)] = event
        self.extremities = [event.event_id]
        return event

    def add(
        self,
        type: str,
        sender: str,
        content: Any = None,
        state_key: str | None = None,
        *,
        check: bool = False,
        **kwargs: Any,
    ) -> Event:
        """Builds and applies an event; with ``check=True`` it must pass :func:`check_auth`."""
        event = self.build(type, sender, content, state_key, **kwargs)
        if check:
            check_auth(event, self.auth_state_for(event))
        return self.apply(event)

    def fork(self) -> RoomBuilder:
        """Returns a builder sharing the history so far but with its own state and extremities."""
        other = copy.copy(self)
        other.state = dict(self.state)
        other.events = self.events
        other.timeline = list(self.timeline)
        other.extremities = list(self.extremities)
        return other

    # --- helpers ------------------------------------------------------------------------------

    def auth_state_for(self, event: Event) -> dict[StateKey, Event]:
        """The auth state of ``event`` from its ``auth_events`` (plus the create event in v12)."""
        out: dict[StateKey, Event] = {}
        if self.create_event is not None:
            out[("m.room.create", "")] = self.create_event
        for event_id in event.auth_event_ids:
            auth_event = self.events.get(event_id)
            if auth_event is not None and auth_event.state_key is not None:
                out[(auth_event.type, auth_event.state_key)] = auth_event
        return out

    def member(
        self, sender: str, target: str, membership: str, *, check: bool = False, **content: Any
    ) -> Event:
        """Adds an ``m.room.member`` event ``sender`` -> ``target``."""
        body = {"membership": membership, **content}
        return self.add("m.room.member", sender, body, target, check=check)

    def join(self, user: str, **content: Any) -> Event:
        """Adds ``user``'s join."""
        return self.member(user, user, "join", **content)

    def invite(self, sender: str, target: str) -> Event:
        """Adds an invite of ``target`` by ``sender``."""
        return self.member(sender, target, "invite")

    def set_power_levels(self, sender: str, **changes: Any) -> Event:
        """Adds a power-levels event: the current content updated with ``changes``."""
        current = self.state.get(("m.room.power_levels", ""))
        content = dict(current.content) if current is not None else {}
        content.update(changes)
        return self.add("m.room.power_levels", sender, content, "")


# --- assertion helpers ----------------------------------------------------------------------------


def rejected_rule(event: Event, auth_state: Mapping[StateKey, Event]) -> str:
    """Runs :func:`check_auth` expecting a rejection; returns the rule number of the reason.

    Raises:
        AssertionError: the event was allowed.
    """
    from sc_proto.errors import AuthError

    try:
        check_auth(event, auth_state)
    except AuthError as e:
        return e.reason.partition(":")[0]
    raise AssertionError(f"{event!r} was allowed")
