"""Every stream of the homeserver, declared once (DESIGN.md 2.7, 2.8; ADR 0007).

Each :class:`StreamSpec` names a stream's notifier name, its key in sync tokens, the process(es)
that write it (``main`` until workers exist, DESIGN 2.8), where its ids come from and the caches a
change on it invalidates. Workers and replication read this table to learn who writes what; the
composition root builds each database-backed stream's :class:`~homeserver.streams.writer.StreamWriter`
from it (:func:`id_allocator`).
"""

from __future__ import annotations

from dataclasses import dataclass

from homeserver.storage.engines.base import DatabaseEngine
from homeserver.storage.ids import IdAllocator

MAIN = "main"
"""The single writer process until workers exist."""


@dataclass(frozen=True)
class IdSource:
    """Where a stream's ids come from.

    Attributes:
        table: the table holding the ids (its maximum seeds the SQLite counter and the start position).
        column: the id column.
        sequence: the PostgreSQL sequence (``IdAllocator``), or None for a counter row updated in the
            writing transaction (``account_data_stream_id``).
    """

    table: str
    column: str
    sequence: str | None


@dataclass(frozen=True)
class StreamSpec:
    """One stream.

    Attributes:
        name: the notifier's stream name.
        token_key: the stream's key in sync tokens (``sc1_e42_ad7``), or None when it has no position
            of its own.
        writers: the instances that write it.
        ids: where its ids come from; None for an in-memory stream (positions die with the process).
        invalidates: the caches a change on it invalidates (what a replica must drop on replication).
    """

    name: str
    token_key: str | None
    writers: tuple[str, ...]
    ids: IdSource | None
    invalidates: tuple[str, ...] = ()


EVENTS = StreamSpec(
    "events", "e", (MAIN,), IdSource("events", "stream_ordering", "events_stream_seq"),
    invalidates=("EventStore event cache", "RelationAggregations", "JoinedRoomsCache (presence)"),
)
ACCOUNT_DATA = StreamSpec(
    "account_data", "ad", (MAIN,), IdSource("account_data_stream_id", "stream_id", None),
    invalidates=("PushRulesService evaluator (m.push_rules)",),
)
RECEIPTS = StreamSpec(
    "receipts", "rc", (MAIN,), IdSource("receipts", "stream_id", "receipts_stream_seq"),
    invalidates=("UnreadCounter",),
)
TO_DEVICE = StreamSpec(
    "to_device", "td", (MAIN,), IdSource("to_device_stream_hwm", "stream_id", "to_device_stream_seq")
)
DEVICE_LISTS = StreamSpec(
    "device_lists", "dl", (MAIN,), IdSource("device_lists_stream", "stream_id", "device_lists_stream_seq")
)
PRESENCE = StreamSpec("presence", "p", (MAIN,), None)
"""In memory; states are persisted (``presence_state.stream_id`` seeds the position at start-up)."""
PUSH_RULES = StreamSpec("push_rules", "pr", (MAIN,), None)
"""Rides on ``account_data`` (``m.push_rules``); its token key only fills initial syncs."""
TYPING = StreamSpec("typing", "ty", (MAIN,), None)
"""In memory only."""

STREAMS: tuple[StreamSpec, ...] = (EVENTS, ACCOUNT_DATA, RECEIPTS, TO_DEVICE, DEVICE_LISTS, PRESENCE, PUSH_RULES, TYPING)


def check_unique(streams: tuple[StreamSpec, ...]) -> None:
    """Raises ValueError when two streams share a name, token key or id sequence/table."""
    for what, values in (
        ("name", [s.name for s in streams]),
        ("token key", [s.token_key for s in streams if s.token_key is not None]),
        ("sequence", [s.ids.sequence for s in streams if s.ids is not None and s.ids.sequence is not None]),
        ("id table", [s.ids.table for s in streams if s.ids is not None]),
    ):
        seen: set[str] = set()
        for value in values:
            if value in seen:
                raise ValueError(f"two streams declare the {what} {value!r}")
            seen.add(value)


check_unique(STREAMS)


def by_name(name: str) -> StreamSpec:
    """The declaration of stream ``name``.

    Raises:
        KeyError: no such stream.
    """
    for spec in STREAMS:
        if spec.name == name:
            return spec
    raise KeyError(f"no stream {name!r} is declared in homeserver.streams.registry")


def id_allocator(spec: StreamSpec, engine: DatabaseEngine) -> IdAllocator:
    """The id allocator of a sequence-backed stream.

    Raises:
        ValueError: the stream has no sequence (in memory, or a counter row).
    """
    if spec.ids is None or spec.ids.sequence is None:
        raise ValueError(f"stream {spec.name!r} has no id sequence")
    return IdAllocator(engine, spec.ids.table, spec.ids.column, spec.ids.sequence)
