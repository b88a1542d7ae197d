"""The full-text index of room events behind server-side search (spec "Server Side Search").

Theory of operation:

* One row per indexed event in ``event_search`` (portable columns: stream ordering, event ID, room,
  indexed key). The text itself lives in an engine-specific structure: an FTS5 table keyed by the
  same stream ordering on SQLite, a ``tsvector`` column with a GIN index on PostgreSQL (DESIGN.md
  2.5: engine-specific SQL only behind a small dialect object, :class:`_SqliteDialect` /
  :class:`_PostgresDialect`, picked once from the engine's name).
* Rows are written inside the persist transaction (:meth:`SearchStore.index_event_txn`), so an
  event is searchable exactly when it is durable.
* Queries never see raw user input as query syntax: callers pass a tuple of plain words (letters and
  digits only, see :func:`homeserver.search.query.tokenize`), and each dialect quotes every word
  itself (FTS5 ``"word"*``, tsquery ``'word':*``) and ANDs them. Every word is a prefix match.
* Redacted, outlier and rejected events are filtered out at query time by joining ``events``, so a
  redaction hides an event at once even before its index row is removed.
* Rank: SQLite's ``bm25()`` is negated (FTS5 scores better matches lower), PostgreSQL's
  ``ts_rank()`` is used as is; higher is better on both.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.storage.engines.base import DatabaseEngine
from homeserver.storage.pool import DatabasePool, Txn
from homeserver.storage.stores.events import EventStore
from homeserver.storage.stores.rooms import RoomStore

SEARCH_KEYS = ("content.body", "content.name", "content.topic")
"""The keys that can be searched (spec ``room_events`` ``keys``)."""

POSTGRES_TEXT_SEARCH_CONFIG = "english"
"""The PostgreSQL text search configuration (stemming language) used for indexing and queries."""


@dataclass(frozen=True)
class SearchHit:
    """One matching index row."""

    stream_ordering: int
    event_id: str
    room_nid: int
    rank: float


@dataclass(frozen=True)
class SearchQuery:
    """What to look for.

    Attributes:
        words: the plain words to match (all must match, each as a prefix); never empty.
        room_nids: the rooms to search.
        keys: which indexed keys to search (a subset of :data:`SEARCH_KEYS`).
        max_stream: only events at or below this stream ordering (the snapshot of the first page).
        by_rank: order by rank (best first) rather than by recency (newest first).
    """

    words: tuple[str, ...]
    room_nids: tuple[int, ...]
    keys: tuple[str, ...]
    max_stream: int
    by_rank: bool


class _Dialect:
    """The engine-specific half of the index: where the text lives and how it is matched."""

    def insert_text_txn(self, txn: Txn, stream_ordering: int, event_id: str, room_nid: int, key: str, text: str) -> None:
        raise NotImplementedError

    def delete_text_txn(self, txn: Txn, where: str, args: Sequence[Any]) -> None:
        """Removes the text of the ``event_search`` rows matching ``where`` (before the rows go)."""
        raise NotImplementedError

    def match_query(self, words: Sequence[str]) -> str:
        """The query expression argument for ``words`` (each one quoted)."""
        raise NotImplementedError

    def select_from(self) -> tuple[str, int, str]:
        """``(rank column SQL, how many match arguments it takes, FROM ... WHERE <match ?> SQL)``."""
        raise NotImplementedError


class _SqliteDialect(_Dialect):
    """FTS5 table ``event_search_fts`` whose rowid is the event's stream ordering."""

    def insert_text_txn(self, txn: Txn, stream_ordering: int, event_id: str, room_nid: int, key: str, text: str) -> None:
        txn.execute(
            "INSERT INTO event_search (stream_ordering, event_id, room_nid, search_key) VALUES (?, ?, ?, ?)",
            (stream_ordering, event_id, room_nid, key),
        )
        txn.execute("INSERT INTO event_search_fts (rowid, value) VALUES (?, ?)", (stream_ordering, text))

    def delete_text_txn(self, txn: Txn, where: str, args: Sequence[Any]) -> None:
        txn.execute(
            f"DELETE FROM event_search_fts WHERE rowid IN (SELECT stream_ordering FROM event_search WHERE {where})",  # noqa: S608
            args,
        )

    def match_query(self, words: Sequence[str]) -> str:
        # FTS5 string syntax: a double-quoted string is always a plain phrase, never an operator
        # (AND/OR/NOT/NEAR, column filters, ^, parentheses); an embedded quote is doubled.
        return " ".join('"' + word.replace('"', '""') + '"*' for word in words)

    def select_from(self) -> tuple[str, int, str]:
        return (
            "-bm25(event_search_fts)",
            0,
            "event_search_fts JOIN event_search AS s ON s.stream_ordering = event_search_fts.rowid"
            " JOIN events AS e ON e.stream_ordering = s.stream_ordering"
            " WHERE event_search_fts MATCH ?",
        )


class _PostgresDialect(_Dialect):
    """``event_search.vector`` (``tsvector``) with a GIN index."""

    _QUERY = f"to_tsquery('{POSTGRES_TEXT_SEARCH_CONFIG}', ?)"

    def insert_text_txn(self, txn: Txn, stream_ordering: int, event_id: str, room_nid: int, key: str, text: str) -> None:
        txn.execute(
            "INSERT INTO event_search (stream_ordering, event_id, room_nid, search_key, vector)"  # noqa: S608
            f" VALUES (?, ?, ?, ?, to_tsvector('{POSTGRES_TEXT_SEARCH_CONFIG}', ?))",
            (stream_ordering, event_id, room_nid, key, text),
        )

    def delete_text_txn(self, txn: Txn, where: str, args: Sequence[Any]) -> None:
        return None  # the text is a column of the row itself

    def match_query(self, words: Sequence[str]) -> str:
        # tsquery syntax: a single-quoted lexeme is plain text (quote and backslash escaped), ':*' makes
        # it a prefix match, '&' ANDs; stop words drop out of the query.
        quoted = ("'" + word.replace("\\", "\\\\").replace("'", "''") + "':*" for word in words)
        return " & ".join(quoted)

    def select_from(self) -> tuple[str, int, str]:
        return (
            f"ts_rank(s.vector, {self._QUERY})",
            1,
            "event_search AS s JOIN events AS e ON e.stream_ordering = s.stream_ordering"
            f" WHERE s.vector @@ {self._QUERY}",
        )


def _dialect_for(engine: DatabaseEngine) -> _Dialect:
    if engine.name == "postgres":
        return _PostgresDialect()
    return _SqliteDialect()


class SearchStore:
    """Writes and queries the search index.

    Args:
        pool: the database pool.
    """

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool
        self._dialect = _dialect_for(pool.engine)

    # ------------------------------------------------------------------ writes (in the persist txn)

    def index_event_txn(self, txn: Txn, stream_ordering: int, event_id: str, room_nid: int, key: str, text: str) -> None:
        """Indexes ``text`` of one event under ``key`` (call inside the transaction persisting it).

        NUL characters and lone surrogates (valid in JSON strings, refused by both drivers) are replaced
        first: an unindexable character must never abort the persist transaction.
        """
        clean = text.replace("\x00", " ").encode("utf-8", "replace").decode("utf-8")
        self._dialect.insert_text_txn(txn, stream_ordering, event_id, room_nid, key, clean)

    def remove_event_txn(self, txn: Txn, event_id: str) -> None:
        """Removes an event from the index (no-op when it is not indexed)."""
        self._dialect.delete_text_txn(txn, "event_id = ?", (event_id,))
        txn.execute("DELETE FROM event_search WHERE event_id = ?", (event_id,))

    def remove_room_txn(self, txn: Txn, room_nid: int) -> None:
        """Removes every event of a room from the index (the room turned on encryption)."""
        self._dialect.delete_text_txn(txn, "room_nid = ?", (room_nid,))
        txn.execute("DELETE FROM event_search WHERE room_nid = ?", (room_nid,))

    @staticmethod
    def is_room_encrypted_txn(txn: Txn, room_nid: int) -> bool:
        """Whether the room's current state has ``m.room.encryption`` (as written so far in ``txn``)."""
        return RoomStore.has_current_state_txn(txn, room_nid, "m.room.encryption", "")

    async def remove_if_redacted(self, event_id: str) -> bool:
        """Drops a redacted event's index row; returns whether one was dropped.

        Only removes the row when ``events.redacted_by`` says the redaction applied, so an unauthorised
        redaction cannot take an event out of search.
        """

        def remove_txn(txn: Txn) -> bool:
            if not EventStore.is_redacted_txn(txn, event_id):
                return False
            txn.execute("SELECT 1 FROM event_search WHERE event_id = ?", (event_id,))
            if txn.fetchone() is None:
                return False
            self.remove_event_txn(txn, event_id)
            return True

        return bool(await self._pool.run_txn("search_remove_redacted", remove_txn))

    async def get_indexed_event_ids(self, room_nid: int) -> list[str]:
        """The indexed events of a room, oldest first (tests and admin tools)."""

        def ids_txn(txn: Txn) -> list[str]:
            txn.execute(
                "SELECT event_id FROM event_search WHERE room_nid = ? ORDER BY stream_ordering", (room_nid,)
            )
            return [str(r[0]) for r in txn.fetchall()]

        return await self._pool.run_read("search_indexed_ids", ids_txn)

    # ------------------------------------------------------------------ queries

    def _where(self, query: SearchQuery, room_fragment: str, room_args: list[Any]) -> tuple[str, list[Any]]:
        _, _, from_sql = self._dialect.select_from()
        keys_fragment, keys_args = self._pool.engine.in_list("s.search_key", list(query.keys))
        match = self._dialect.match_query(query.words)
        sql = (
            f"{from_sql} AND {room_fragment} AND {keys_fragment} AND s.stream_ordering <= ?"
            " AND e.redacted_by IS NULL AND e.outlier = ? AND e.rejected_reason IS NULL"
        )
        return sql, [match, *room_args, *keys_args, query.max_stream, False]

    async def search(
        self, query: SearchQuery, *, limit: int, offset: int = 0, before_stream: int | None = None
    ) -> list[SearchHit]:
        """One page of matches, best first (``by_rank``) or newest first.

        Args:
            query: what to look for.
            limit: the most rows to return.
            offset: rows to skip (rank order pages).
            before_stream: only events strictly below this stream ordering (recency order pages).
        """
        if not query.room_nids or not query.words or not query.keys or limit <= 0:
            return []
        rank_sql, rank_args, _ = self._dialect.select_from()
        match = self._dialect.match_query(query.words)
        order = "score DESC, s.stream_ordering DESC" if query.by_rank else "s.stream_ordering DESC"
        batches = list(self._pool.engine.in_list_batches("s.room_nid", list(query.room_nids)))

        def search_txn(txn: Txn) -> list[SearchHit]:
            hits: list[list[SearchHit]] = []
            for fragment, room_args in batches:
                where_sql, args = self._where(query, fragment, room_args)
                extra = ""
                if before_stream is not None:
                    extra = " AND s.stream_ordering < ?"
                    args.append(before_stream)
                # Several room batches are merged below, so each must return its first offset+limit rows.
                batch_limit, batch_offset = (limit, offset) if len(batches) == 1 else (offset + limit, 0)
                txn.execute(
                    f"SELECT s.stream_ordering, s.event_id, s.room_nid, {rank_sql} AS score"  # noqa: S608
                    f" FROM {where_sql}{extra} ORDER BY {order} LIMIT ? OFFSET ?",
                    [*([match] * rank_args), *args, batch_limit, batch_offset],
                )
                hits.append(
                    [SearchHit(int(r[0]), str(r[1]), int(r[2]), float(r[3] or 0.0)) for r in txn.fetchall()]
                )
            if len(hits) == 1:
                return hits[0]
            key = (lambda h: (-h.rank, -h.stream_ordering)) if query.by_rank else (lambda h: -h.stream_ordering)
            merged = list(heapq.merge(*hits, key=key))
            return merged[offset : offset + limit]

        return await self._pool.run_read("search_events", search_txn)

    async def count(self, query: SearchQuery) -> int:
        """How many index rows match (before visibility filtering)."""
        if not query.room_nids or not query.words or not query.keys:
            return 0
        batches = list(self._pool.engine.in_list_batches("s.room_nid", list(query.room_nids)))

        def count_txn(txn: Txn) -> int:
            total = 0
            for fragment, room_args in batches:
                where_sql, args = self._where(query, fragment, room_args)
                txn.execute(f"SELECT COUNT(*) FROM {where_sql}", args)  # noqa: S608
                row = txn.fetchone()
                total += int(row[0]) if row and row[0] is not None else 0
            return total

        return await self._pool.run_read("search_count", count_txn)
