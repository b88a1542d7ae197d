"""The sync-source contract and the registry the engine iterates (DESIGN.md 2.7).

Every stream that contributes to ``/sync`` is a :class:`SyncSource`: it names its position in the
:class:`~homeserver.streams.tokens.StreamToken` (``e`` for room events, ``ad`` for account data...),
reports its current position, and fills its part of a :class:`SyncResult` for an initial sync or for
the range ``(from, to]`` of an incremental one. Sources run in registration order, so per-room
sources (account data, typing, receipts) registered after the room-events source see which rooms the
user is in (:attr:`SyncResult.joined_room_ids`) and which were newly joined or left
(:attr:`SyncResult.newly_joined_room_ids`, :attr:`SyncResult.newly_left_room_ids`): structured facts,
never the rendered JSON, which filters may have stripped. Adding a stream to sync means writing a source and
registering it in the composition root; the engine does not change.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from homeserver.streams.tokens import StreamToken
from homeserver.sync.filters import SyncFilter

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class SyncContext:
    """Who is syncing and how.

    Attributes:
        user_id: the syncing user.
        device_id: their device (None for device-less tokens).
        filter: the parsed filter.
        full_state: the request's ``full_state``.
        since_token: the encoded ``since`` token (None for an initial sync); keys per-device caches.
        next_batch: the encoded token this response will carry (sources that remember what a device
            was sent key it by this).
    """

    user_id: str
    device_id: str | None
    filter: SyncFilter
    full_state: bool = False
    since_token: str | None = None
    next_batch: str | None = None


@dataclass
class SyncResult:
    """A sync response being assembled by the sources.

    Attributes:
        join / invite / leave / knock: room ID -> that room's section of ``rooms``.
        account_data: global account data events.
        presence / to_device: events of those sections.
        device_lists: ``changed`` and ``left`` user IDs.
        device_one_time_keys_count: algorithm -> count.
        extensions: top-level keys added by extension sources (namespaced, e.g. ``io.sc.drive``).
        joined_room_ids: rooms the user is joined to at the end of the sync (all of them, not only
            those with changes); per-room sources use it.
        newly_joined_room_ids: joined rooms of an incremental sync that the user joined (or left and
            re-joined) in its range. Set by the room-events source from the membership events
            themselves, before any filter, so per-room sources never inspect rendered JSON (ADR 0008).
        newly_left_room_ids: rooms of an incremental sync the user was joined to at ``since`` or
            within the range and no longer is at its end (left, kicked, banned), whether or not
            ``rooms.leave`` shows them (forgotten rooms, filters). A rejected invite is not one.
        wait_room_ids: rooms whose activity should wake a long-polling sync of this user.
    """

    join: dict[str, JsonDict] = field(default_factory=dict)
    invite: dict[str, JsonDict] = field(default_factory=dict)
    leave: dict[str, JsonDict] = field(default_factory=dict)
    knock: dict[str, JsonDict] = field(default_factory=dict)
    account_data: list[JsonDict] = field(default_factory=list)
    presence: list[JsonDict] = field(default_factory=list)
    to_device: list[JsonDict] = field(default_factory=list)
    device_lists_changed: list[str] = field(default_factory=list)
    device_lists_left: list[str] = field(default_factory=list)
    device_one_time_keys_count: dict[str, int] = field(default_factory=dict)
    device_unused_fallback_key_types: list[str] | None = None
    """Set by the device-keys source; like the key counts, it alone does not end a long poll."""
    position_caps: dict[str, int] = field(default_factory=dict)
    """Token name -> position: a source that sent only part of its range (``(from, cap]``, e.g. a
    capped to-device page) lowers its position in ``next_batch`` so the next sync resumes there."""
    extensions: JsonDict = field(default_factory=dict)
    joined_room_ids: set[str] = field(default_factory=set)
    newly_joined_room_ids: set[str] = field(default_factory=set)
    newly_left_room_ids: set[str] = field(default_factory=set)
    wait_room_ids: set[str] = field(default_factory=set)

    def joined_room(self, room_id: str) -> JsonDict:
        """The ``rooms.join`` entry of ``room_id``, created empty if a source adds the room first."""
        entry = self.join.get(room_id)
        if entry is None:
            entry = new_joined_room()
            self.join[room_id] = entry
        return entry

    def is_empty(self) -> bool:
        """True when there is nothing to tell the client (a long poll keeps waiting)."""
        return not (
            self.join or self.invite or self.leave or self.knock or self.account_data or self.presence
            or self.to_device or self.device_lists_changed or self.device_lists_left or self.extensions
        )

    def to_json(self, next_batch: str) -> JsonDict:
        """The response body (``next_batch`` lowered by :attr:`position_caps`)."""
        if self.position_caps:
            token = StreamToken.decode(next_batch, StreamToken())
            for name, cap in self.position_caps.items():
                token = token.with_position(name, min(cap, token.get(name, cap)))
            next_batch = token.encode()
        body: JsonDict = {
            "next_batch": next_batch,
            "rooms": {"join": self.join, "invite": self.invite, "leave": self.leave, "knock": self.knock},
            "account_data": {"events": self.account_data},
            "presence": {"events": self.presence},
            "to_device": {"events": self.to_device},
            "device_lists": {"changed": self.device_lists_changed, "left": self.device_lists_left},
            "device_one_time_keys_count": self.device_one_time_keys_count,
        }
        if self.device_unused_fallback_key_types is not None:
            body["device_unused_fallback_key_types"] = self.device_unused_fallback_key_types
        body.update(self.extensions)
        return body


def new_joined_room() -> JsonDict:
    """An empty ``rooms.join`` entry with every section clients expect."""
    return {
        "timeline": {"events": [], "limited": False},
        "state": {"events": []},
        "account_data": {"events": []},
        "ephemeral": {"events": []},
        "unread_notifications": {},
    }


class SyncSource(Protocol):
    """One stream's contribution to ``/sync``.

    Attributes:
        name: the stream's name in sync tokens (lower-case letters, unique).
    """

    name: str

    async def current_position(self) -> int:
        """The stream's position below which everything is readable ("now")."""
        ...

    async def fill_initial(self, ctx: SyncContext, result: SyncResult, to_position: int) -> None:
        """Fills an initial sync: everything up to ``to_position``."""
        ...

    async def fill_incremental(
        self, ctx: SyncContext, result: SyncResult, from_position: int, to_position: int
    ) -> None:
        """Fills an incremental sync: what changed in ``(from_position, to_position]``."""
        ...


class SyncSourceRegistry:
    """The registered sources, in the order they fill a response."""

    def __init__(self) -> None:
        self._sources: dict[str, SyncSource] = {}

    def register(self, source: SyncSource) -> None:
        """Adds a source.

        Raises:
            ValueError: the name is not lower-case letters, or is taken.
        """
        name = source.name
        if not name.isascii() or not name.isalpha() or not name.islower():
            raise ValueError(f"sync source name must be lower-case letters: {name!r}")
        if name in self._sources:
            raise ValueError(f"sync source {name!r} is already registered")
        self._sources[name] = source

    def names(self) -> frozenset[str]:
        """The token names of every registered source."""
        return frozenset(self._sources)

    def get(self, name: str) -> SyncSource | None:
        return self._sources.get(name)

    def __iter__(self) -> Iterator[SyncSource]:
        return iter(list(self._sources.values()))

    def __len__(self) -> int:
        return len(self._sources)
