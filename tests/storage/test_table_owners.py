"""One owner per table: SQL naming the event and current-state tables lives only in its store.

DESIGN.md 2.5 "Stores", STYLE.md "the same SQL table written or read from several modules: one store
owns it"; docs/adr/0006-room-input.md lists the owners. The test greps every module under
``homeserver/``, ``federation/`` and ``media/`` for SQL statements naming an owned table.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

OWNERS: dict[str, str] = {
    "events": "homeserver/storage/stores/events.py",
    "event_edges": "homeserver/storage/stores/events.py",
    "event_auth_edges": "homeserver/storage/stores/events.py",
    "event_txn_ids": "homeserver/storage/stores/events.py",
    "redactions": "homeserver/storage/stores/events.py",
    "current_state": "homeserver/storage/stores/rooms.py",
    "current_state_deltas": "homeserver/storage/stores/rooms.py",
    "forward_extremities": "homeserver/storage/stores/rooms.py",
    "federation_sender_position": "federation/sender/store.py",
    "federation_destinations": "federation/sender/store.py",
    "federation_destination_rooms": "federation/sender/store.py",
    "federation_edu_outbox": "federation/sender/store.py",
    "federation_inbound_transactions": "federation/transaction_store.py",
    "server_signing_keys": "federation/key_store.py",
    "server_keys_json": "federation/key_store.py",
}
"""Table -> the one module whose SQL may name it (joins live with the store of the main table)."""

LEGACY: set[tuple[str, str]] = set()
"""``(module, table)`` pairs not moved yet; must only shrink."""

_SQL = re.compile(r"\b(?:FROM|INTO|UPDATE|TABLE)\s+(\w+)", re.IGNORECASE)
"""The main table of a statement; a ``JOIN``ed table may belong to another store (the query lives with
the main table's owner)."""


def _violations() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for package in ("homeserver", "federation", "media"):
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            for string in re.findall(r'"((?:[^"\\\n]|\\.)*)"', path.read_text(encoding="utf-8")):
                for table in _SQL.findall(string):
                    owner = OWNERS.get(table)
                    if owner is not None and owner != rel:
                        found.add((rel, table))
    return found


def test_owned_tables_have_one_sql_module() -> None:
    """SQL on events/current-state tables outside the owning store fails (except the shrinking legacy list)."""
    assert _violations() - LEGACY == set()


def test_legacy_list_only_shrinks() -> None:
    """An entry that no longer violates must be removed from LEGACY (the list can only get shorter)."""
    assert LEGACY - _violations() == set()


def test_the_scan_finds_sql() -> None:
    """The scanner recognises the owners' own statements (so an empty result is not a broken regex)."""
    text = (ROOT / OWNERS["current_state"]).read_text(encoding="utf-8")
    assert "current_state" in _SQL.findall(" ".join(re.findall(r'"((?:[^"\\\n]|\\.)*)"', text)))
