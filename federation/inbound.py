"""Inbound transactions: ``PUT /_matrix/federation/v1/send/{txnId}`` (issue 13, ADR 0014).

Theory of operation:

1. The transport has authenticated the origin (``X-Matrix``); the body's ``origin`` must be it.
2. Each origin has a token bucket of transactions (429 ``M_LIMIT_EXCEEDED`` when spent).
3. Transactions of one origin are handled one at a time (a linearizer keyed by origin). In its turn
   a transaction whose answer is already stored (``federation_inbound_transactions``) gets that
   answer again and nothing is processed; otherwise it is processed and the answer stored.
4. The envelope is parsed and bounded (≤ 50 PDUs, ≤ 100 EDUs; :mod:`sc_proto.federation.transaction`).
5. PDUs are grouped by room: rooms are processed concurrently, each room's PDUs in the order they
   came. Each PDU: its room must be known (we learn rooms by joining, never from ``/send``), the
   origin must pass the room's ``m.room.server_acl``, the sender must not be one of our users, then
   format, signatures (keys valid at the event's time) and content hash (mismatch: the redacted copy
   continues), then :meth:`RoomEventsAPI.receive_pdu`. Every failure becomes that PDU's
   ``{"error": ...}`` in the answer, never a non-200 answer for the whole transaction.
6. EDUs go to the :class:`~federation.edus.EDURegistry` after the PDUs; the room-scoped ones
   (``m.typing``, ``m.receipt``) are filtered by the rooms' ACLs first.

Invariant: a transaction answered once is never processed again; the answer body is the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import ensureDeferred, gatherResults

from federation.edus import EDURegistry
from federation.event_checks import EventChecker, describe_refusal
from federation.interfaces import FederationRequest, JsonDict
from federation.transaction_store import InboundTransactionStore
from homeserver.api.services import PDUStatus, RoomEventsAPI, RoomHistoryAPI
from homeserver.http.ratelimit import RateLimiter, RateLimitRule
from homeserver.identity import LocalServer, domain_of
from homeserver.util.linearizer import Linearizer
from sc_proto.errors import Codes, InvalidEventError, MatrixError, RemoteProtocolError, SignatureError
from sc_proto.events.hashes import compute_event_id
from sc_proto.federation.acl import SERVER_ACL_TYPE, is_server_allowed_by_acl
from sc_proto.federation.transaction import EDU, parse_transaction
from sc_proto.room_versions import RoomVersion, get_room_version

logger = logging.getLogger(__name__)

SEND_PATH = "/_matrix/federation/v1/send/{txnId}"
TXN_RATE_ACTION = "federation.inbound_txn"
DEFAULT_TXN_RATE = RateLimitRule(per_second=10.0, burst=50)
"""Transactions per origin: a sender waits for each answer, so this only bites a misbehaving peer."""
MAX_TXN_ID_BYTES = 255

_ROOM_SCOPED_EDUS = frozenset({"m.typing", "m.receipt"})


class _Refused(Exception):
    """One PDU refused before the room input (the message goes into the answer)."""


class InboundTransactions:
    """Handles ``/send``: dedup, limits, per-room ordered PDU processing, EDU dispatch.

    Args:
        local: our server name.
        room_events: the room input.
        history: graph reads (room versions, current ACL).
        checker: format/signature/hash checks.
        store: stored answers.
        edus: the EDU handlers.
        time_msec: the clock.
        ratelimiter: a limiter with a rule for :data:`TXN_RATE_ACTION` (one is built when None).
    """

    def __init__(
        self,
        local: LocalServer,
        room_events: RoomEventsAPI,
        history: RoomHistoryAPI,
        checker: EventChecker,
        store: InboundTransactionStore,
        edus: EDURegistry,
        time_msec: Callable[[], int],
        ratelimiter: RateLimiter | None = None,
    ) -> None:
        self._local = local
        self._room_events = room_events
        self._history = history
        self._checker = checker
        self._store = store
        self.edus = edus
        self._now = time_msec
        self._ratelimiter = ratelimiter or RateLimiter(time_msec, {TXN_RATE_ACTION: DEFAULT_TXN_RATE})
        self._turns = Linearizer("federation_inbound_txn")

    async def on_send(self, request: FederationRequest) -> tuple[int, JsonDict]:
        """PUT /_matrix/federation/v1/send/{txnId}

        Raises:
            MatrixError: 401 without an origin, 400 for a malformed envelope, 403 when the body's
                origin is not the authenticated one, 429 when the origin sends too fast.
        """
        origin = request.origin
        if origin is None:
            raise MatrixError(401, Codes.UNAUTHORIZED, "Federation requests must be signed")
        txn_id = request.path_args.get("txnId", "")
        if not txn_id or len(txn_id.encode("utf-8", "surrogatepass")) > MAX_TXN_ID_BYTES:
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid transaction ID")
        self._ratelimiter.check(TXN_RATE_ACTION, origin)
        txn = parse_transaction(txn_id, request.content)
        if txn.origin != origin:
            raise MatrixError(403, Codes.FORBIDDEN, "Transaction origin does not match the signing server")
        async with self._turns.queue(origin):
            previous = await self._store.get_response(origin, txn_id)
            if previous is not None:
                logger.info("transaction %s from %s already answered", txn_id, origin, extra={"destination": origin})
                return 200, previous
            pdus = await self._process_pdus(origin, txn.pdus)
            await self._process_edus(origin, txn.edus)
            response: JsonDict = {"pdus": pdus}
            await self._store.set_response(origin, txn_id, response, self._now())
            return 200, response

    # ------------------------------------------------------------------ PDUs

    async def _process_pdus(self, origin: str, pdus: Sequence[Mapping[str, Any]]) -> JsonDict:
        by_room: dict[str, list[Mapping[str, Any]]] = {}
        results: JsonDict = {}
        for pdu in pdus:
            room_id = pdu.get("room_id")
            if not isinstance(room_id, str):
                logger.info("dropping a PDU without a room_id from %s", origin, extra={"destination": origin})
                continue
            by_room.setdefault(room_id, []).append(pdu)
        room_results = await gatherResults(
            [ensureDeferred(self._process_room(origin, room_id, room_pdus)) for room_id, room_pdus in by_room.items()],
            consumeErrors=True,
        )
        for room_result in room_results:
            results.update(room_result)
        return results

    async def _process_room(self, origin: str, room_id: str, pdus: list[Mapping[str, Any]]) -> JsonDict:
        """One room's PDUs in their order; never raises."""
        results: JsonDict = {}
        try:
            version_id = await self._history.get_room_version(room_id)
            room_version = get_room_version(version_id) if version_id is not None else None
        except Exception:
            logger.exception("could not read room %s", room_id, extra={"room_id": room_id})
            return results
        if room_version is None:
            # We cannot compute v3+ event IDs without the room version: nothing to answer with.
            logger.info("dropping %d PDUs for unknown room from %s", len(pdus), origin, extra={"room_id": room_id})
            return results
        for pdu in pdus:
            event_id = _event_id_or_none(pdu, room_version)
            if event_id is None:
                logger.info("dropping an unidentifiable PDU from %s", origin, extra={"room_id": room_id})
                continue
            if event_id in results:
                continue  # the same PDU twice in one transaction
            try:
                # Read per PDU: an earlier PDU of this transaction may have changed the ACL.
                if not await self.is_server_allowed(origin, room_id):
                    raise _Refused("Server is banned from this room by its server ACL")
                results[event_id] = await self._process_pdu(origin, pdu, event_id, room_version)
            except _Refused as e:
                results[event_id] = {"error": str(e)}
            except (InvalidEventError, SignatureError, MatrixError) as e:
                results[event_id] = {"error": describe_refusal(e)}
            except Exception:
                logger.exception("PDU %s from %s failed", event_id, origin, extra={"room_id": room_id})
                results[event_id] = {"error": "internal error"}
        return results

    async def _process_pdu(
        self, origin: str, pdu: Mapping[str, Any], event_id: str, room_version: RoomVersion
    ) -> JsonDict:
        sender = pdu.get("sender")
        sender_domain = domain_of(sender) if isinstance(sender, str) else None
        if sender_domain is not None and self._local.is_mine_server(sender_domain) and not self._local.is_mine_server(origin):
            raise _Refused("Sender is a user of the receiving server")
        if await self._room_events.get_pdu(event_id) is not None:
            return {}  # already known (same ID: same reference hash): no key lookups, nothing to do
        checked = await self._checker.check(pdu, room_version)
        event = checked.event
        outcome = await self._room_events.receive_pdu(origin, event)
        if outcome.status is PDUStatus.REJECTED:
            return {"error": f"rejected: {outcome.reason or 'not authorised'}"}
        return {}

    # ------------------------------------------------------------------ EDUs

    async def _process_edus(self, origin: str, edus: Sequence[EDU]) -> None:
        for edu in edus:
            content: Mapping[str, Any] = edu.content
            if edu.edu_type in _ROOM_SCOPED_EDUS:
                filtered = await self._acl_filter_edu(origin, edu.edu_type, content)
                if filtered is None:
                    continue
                content = filtered
            await self.edus.dispatch(origin, edu.edu_type, content)

    async def _acl_filter_edu(self, origin: str, edu_type: str, content: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Typing: dropped when the origin is denied in its room. Receipts: denied rooms removed."""
        if edu_type == "m.typing":
            room_id = content.get("room_id")
            if not isinstance(room_id, str) or not await self.is_server_allowed(origin, room_id):
                return None
            return content
        kept = {r: v for r, v in content.items() if await self.is_server_allowed(origin, r)}
        return kept or None

    async def is_server_allowed(self, server_name: str, room_id: str) -> bool:
        """Whether the room's current server ACL lets ``server_name`` in (True without an ACL)."""
        acl = await self._history.get_current_state_event(room_id, SERVER_ACL_TYPE, "")
        return is_server_allowed_by_acl(server_name, acl.content if acl is not None else None)


def _event_id_or_none(pdu: Mapping[str, Any], room_version: RoomVersion) -> str | None:
    try:
        return compute_event_id(pdu, room_version)
    except (InvalidEventError, RemoteProtocolError, RecursionError):
        return None
