"""Keeps the search index in step with the events the server persists.

Theory of operation:

* :meth:`SearchIndexer.index_txn` is a persister in-transaction hook: it runs inside the transaction
  that persists each event, so the index row commits (or rolls back) with the event.
* Indexed: ``content.body`` of ``m.room.message``, ``content.name`` of ``m.room.name`` and
  ``content.topic`` (plus the ``text/plain`` bodies of ``m.topic``) of ``m.room.topic``, the keys the
  spec lists. Nothing else is ever indexed, in particular not ``m.room.encrypted``.
* Encrypted rooms are not searchable (spec: "The search will *not* include rooms that are end to end
  encrypted"): nothing is indexed in a room whose state has ``m.room.encryption``, and when a room
  turns encryption on, its earlier index rows are removed in the same transaction. Encryption can
  never be turned off, so the set of rooms known to be encrypted is cached (added only after commit).
* Redactions: queries already skip events whose ``redacted_by`` is set; after a redaction commits,
  :meth:`SearchIndexer.on_persisted` also drops the redacted event's index row (in the background;
  only when the redaction applied).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from twisted.internet import defer

from homeserver.events.persister import PersistedEvent
from homeserver.storage.pool import Txn
from homeserver.storage.stores.search import SearchStore
from sc_proto.events.model import Event

logger = logging.getLogger(__name__)

MESSAGE_TYPE = "m.room.message"
NAME_TYPE = "m.room.name"
TOPIC_TYPE = "m.room.topic"
ENCRYPTION_TYPE = "m.room.encryption"
REDACTION_TYPE = "m.room.redaction"


def _topic_text(content: Mapping[str, Any]) -> str | None:
    """``topic`` plus any different ``text/plain`` body of ``m.topic`` (spec: both are searched)."""
    parts: list[str] = []
    topic = content.get("topic")
    if isinstance(topic, str) and topic.strip():
        parts.append(topic)
    block = content.get("m.topic")
    texts = block.get("m.text") if isinstance(block, dict) else None
    if isinstance(texts, list):
        for item in texts:
            if not isinstance(item, dict):
                continue
            mimetype = item.get("mimetype", "text/plain")
            body = item.get("body")
            if mimetype == "text/plain" and isinstance(body, str) and body.strip() and body not in parts:
                parts.append(body)
    return "\n".join(parts) if parts else None


def extract_search_text(event: Event) -> tuple[str, str] | None:
    """``(key, text)`` to index for ``event``, or None when nothing of it is searchable."""
    content = event.content
    if event.type == MESSAGE_TYPE and event.state_key is None:
        body = content.get("body")
        return ("content.body", body) if isinstance(body, str) and body.strip() else None
    if event.state_key != "":
        return None
    if event.type == NAME_TYPE:
        name = content.get("name")
        return ("content.name", name) if isinstance(name, str) and name.strip() else None
    if event.type == TOPIC_TYPE:
        text = _topic_text(content)
        return ("content.topic", text) if text is not None else None
    return None


class SearchIndexer:
    """Indexes events as they are persisted and forgets redacted ones.

    Args:
        store: the search index store.
    """

    def __init__(self, store: SearchStore) -> None:
        self._store = store
        self._encrypted_rooms: set[int] = set()

    def index_txn(self, txn: Txn, event: Event, stream_ordering: int, room_nid: int) -> None:
        """Persister in-transaction hook (``hook(txn, event, stream_ordering, room_nid)``)."""
        if event.type == ENCRYPTION_TYPE and event.state_key == "":
            # The room is encrypted from now on: it leaves server-side search altogether.
            self._store.remove_room_txn(txn, room_nid)
            txn.call_after(self._encrypted_rooms.add, room_nid)
            return
        extracted = extract_search_text(event)
        if extracted is None or room_nid in self._encrypted_rooms:
            return
        if self._store.is_room_encrypted_txn(txn, room_nid):
            txn.call_after(self._encrypted_rooms.add, room_nid)
            return
        key, text = extracted
        # PostgreSQL text cannot hold NUL; the index is only for matching, so a space stands in for it.
        text = text.replace("\x00", " ")
        self._store.index_event_txn(txn, stream_ordering, event.event_id, room_nid, key, text)

    def on_persisted(self, persisted: PersistedEvent) -> None:
        """Persister after-commit hook: drops a just-redacted event from the index (best effort;
        queries filter redacted events regardless)."""
        event = persisted.stored.event
        if event.type != REDACTION_TYPE or event.redacts is None:
            return
        d = defer.ensureDeferred(self._store.remove_if_redacted(event.redacts))
        d.addErrback(lambda f: logger.error("could not drop a redacted event from the search index: %s", f.value))
