"""Federation transactions: parse and build ``PUT /_matrix/federation/v1/send/{txnId}`` bodies.

Server-server API, "Transactions": a transaction carries ``origin``, ``origin_server_ts``, at most
50 PDUs and at most 100 EDUs (each ``{"edu_type", "content"}``). Parsing checks the envelope only;
each PDU is checked on its own (:mod:`sc_proto.federation.pdu_checks`) because its format depends on
its room's version, which the host knows and this library does not. A PDU that is not even a JSON
object is kept as is, so the host can report it without refusing the whole transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sc_proto.errors import Codes, RemoteProtocolError
from sc_proto.identifiers import is_valid_server_name

__all__ = [
    "EDU",
    "MAX_EDUS_PER_TRANSACTION",
    "MAX_PDUS_PER_TRANSACTION",
    "Transaction",
    "build_transaction",
    "parse_transaction",
]

MAX_PDUS_PER_TRANSACTION = 50
"""Most PDUs one transaction may carry."""
MAX_EDUS_PER_TRANSACTION = 100
"""Most EDUs one transaction may carry."""
_MAX_INT64 = 2**63 - 1


@dataclass(frozen=True)
class EDU:
    """One ephemeral data unit.

    Attributes:
        edu_type: e.g. ``m.typing``.
        content: its content object.
    """

    edu_type: str
    content: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The wire form."""
        return {"edu_type": self.edu_type, "content": dict(self.content)}


@dataclass(frozen=True)
class Transaction:
    """A parsed transaction envelope.

    Attributes:
        txn_id: the transaction ID (from the path).
        origin: the sending server's name as the body claims it.
        origin_server_ts: when the sender started the transaction (ms).
        pdus: the PDUs, each a JSON object (not validated yet).
        edus: the EDUs that were well formed (a malformed EDU is dropped, see ``dropped_edus``).
        dropped_edus: how many EDUs were malformed.
    """

    txn_id: str
    origin: str
    origin_server_ts: int
    pdus: tuple[Mapping[str, Any], ...] = ()
    edus: tuple[EDU, ...] = ()
    dropped_edus: int = field(default=0)


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, Codes.BAD_JSON, 400)


def _list_field(body: Mapping[str, Any], key: str, limit: int, *, required: bool) -> list[Any]:
    if key not in body:
        if required:
            raise _bad(f"missing '{key}'")
        return []
    value = body[key]
    if not isinstance(value, list):
        raise _bad(f"'{key}' must be a list")
    if len(value) > limit:
        raise _bad(f"a transaction may carry at most {limit} {key}")
    return value


def parse_transaction(txn_id: str, body: object) -> Transaction:
    """Parses and bounds a transaction body.

    Args:
        txn_id: the transaction ID from the request path.
        body: the decoded JSON body.

    Returns:
        The transaction. Each PDU is a JSON object; malformed EDUs are dropped (counted).

    Raises:
        RemoteProtocolError: 400 ``M_BAD_JSON`` when the body is not an object, lacks ``origin``,
            ``origin_server_ts`` or ``pdus``, has more than 50 PDUs or 100 EDUs, or a PDU is not an
            object.
    """
    if not isinstance(txn_id, str) or not txn_id:
        raise _bad("empty transaction ID")
    if not isinstance(body, Mapping):
        raise _bad("transaction must be a JSON object")
    origin = body.get("origin")
    if not isinstance(origin, str) or not is_valid_server_name(origin):
        raise _bad("'origin' must be a server name")
    ts = body.get("origin_server_ts")
    if not isinstance(ts, int) or isinstance(ts, bool) or not -_MAX_INT64 <= ts <= _MAX_INT64:
        raise _bad("'origin_server_ts' must be an integer")
    pdus = _list_field(body, "pdus", MAX_PDUS_PER_TRANSACTION, required=True)
    if not all(isinstance(p, Mapping) for p in pdus):
        raise _bad("every PDU must be a JSON object")
    raw_edus = _list_field(body, "edus", MAX_EDUS_PER_TRANSACTION, required=False)
    edus: list[EDU] = []
    for raw in raw_edus:
        if isinstance(raw, Mapping) and isinstance(raw.get("edu_type"), str) and isinstance(raw.get("content"), Mapping):
            edus.append(EDU(raw["edu_type"], raw["content"]))
    return Transaction(txn_id, origin, ts, tuple(pdus), tuple(edus), len(raw_edus) - len(edus))


def build_transaction(
    origin: str, origin_server_ts: int, pdus: Sequence[Mapping[str, Any]], edus: Sequence[EDU] = ()
) -> dict[str, Any]:
    """Builds a transaction body (the sender's side).

    Raises:
        LocalProtocolError: more than 50 PDUs or 100 EDUs (the caller must batch).
    """
    from sc_proto.errors import LocalProtocolError

    if len(pdus) > MAX_PDUS_PER_TRANSACTION or len(edus) > MAX_EDUS_PER_TRANSACTION:
        raise LocalProtocolError("too many PDUs or EDUs for one transaction")
    body: dict[str, Any] = {"origin": origin, "origin_server_ts": origin_server_ts, "pdus": [dict(p) for p in pdus]}
    if edus:
        body["edus"] = [e.to_json() for e in edus]
    return body
