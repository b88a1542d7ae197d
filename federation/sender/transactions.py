"""Transactions: batching PDUs and EDUs into ``PUT /_matrix/federation/v1/send/{txnId}`` (spec "Transactions").

Theory of operation:

* A transaction carries at most :data:`MAX_PDUS_PER_TRANSACTION` PDUs and
  :data:`MAX_EDUS_PER_TRANSACTION` EDUs (the spec's limits); the queue takes the oldest items first.
* Transaction ids are unique per destination for ever: the sender's start time (ms) and a counter,
  so ids from before a restart are never reused (the receiver deduplicates by id).
* The response's ``pdus`` map holds a per-PDU result; an ``error`` there means the receiver refused
  that one PDU (auth failure, bad signature...). Sending it again would get the same answer, so it
  is logged and not retried (:func:`pdu_errors`).
"""

from __future__ import annotations

import itertools
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

JsonDict = dict[str, Any]

MAX_PDUS_PER_TRANSACTION = 50
MAX_EDUS_PER_TRANSACTION = 100
SEND_PATH = "/_matrix/federation/v1/send/"


@dataclass(frozen=True)
class QueuedPdu:
    """A PDU waiting for one destination."""

    stream_ordering: int
    room_id: str
    event_id: str
    pdu: JsonDict


@dataclass(frozen=True)
class QueuedEdu:
    """An EDU waiting for one destination; ``outbox_id`` is set when it is persisted."""

    edu_type: str
    content: JsonDict
    outbox_id: int | None = None


@dataclass(frozen=True)
class Transaction:
    """One transaction for one destination.

    Attributes:
        txn_id: unique for the destination.
        destination: where it goes.
        pdus: at most 50.
        edus: at most 100.
    """

    txn_id: str
    destination: str
    pdus: Sequence[QueuedPdu] = field(default_factory=tuple)
    edus: Sequence[QueuedEdu] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if len(self.pdus) > MAX_PDUS_PER_TRANSACTION or len(self.edus) > MAX_EDUS_PER_TRANSACTION:
            raise ValueError("a transaction holds at most 50 PDUs and 100 EDUs")

    @property
    def path(self) -> str:
        """``/_matrix/federation/v1/send/{txnId}``, percent-encoded."""
        return SEND_PATH + urllib.parse.quote(self.txn_id, safe="")

    def body(self, origin: str, origin_server_ts: int) -> JsonDict:
        """The request body (``origin``, ``origin_server_ts``, ``pdus``, and ``edus`` when there are any)."""
        body: JsonDict = {
            "origin": origin,
            "origin_server_ts": origin_server_ts,
            "pdus": [p.pdu for p in self.pdus],
        }
        if self.edus:
            body["edus"] = [{"edu_type": e.edu_type, "content": e.content} for e in self.edus]
        return body

    @property
    def max_stream_ordering(self) -> int | None:
        """The newest PDU's stream ordering (None without PDUs)."""
        return max((p.stream_ordering for p in self.pdus), default=None)

    @property
    def outbox_ids(self) -> list[int]:
        """The persisted EDUs' ids (deleted once the transaction is acknowledged)."""
        return [e.outbox_id for e in self.edus if e.outbox_id is not None]


class TransactionIds:
    """Hands out transaction ids: ``<start ms>.<counter>`` (unique across restarts of one server).

    Args:
        start_ms: when this process started (ms).
    """

    def __init__(self, start_ms: int) -> None:
        self._prefix = str(start_ms)
        self._counter = itertools.count(1)

    def next(self) -> str:
        """A new transaction id."""
        return f"{self._prefix}.{next(self._counter)}"


def pdu_errors(response: Mapping[str, Any]) -> dict[str, str]:
    """``event_id -> error`` for the PDUs the receiver refused (malformed answers give ``{}``)."""
    results = response.get("pdus")
    if not isinstance(results, Mapping):
        return {}
    errors: dict[str, str] = {}
    for event_id, result in results.items():
        if isinstance(event_id, str) and isinstance(result, Mapping) and "error" in result:
            error = result["error"]
            errors[event_id] = error[:200] if isinstance(error, str) else "(non-string error)"
    return errors
