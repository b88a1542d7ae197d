"""WebSocket sync push (SecureConnect extension): ``/_sc/client/v1/sync/ws`` (docs/websocket.md).

Theory of operation
-------------------
A connection streams the *same* incremental ``/sync`` responses a long-polling client would get:
every frame body is computed by :class:`~homeserver.sync.engine.SyncEngine` from a ``since`` token,
and carries the engine's ``next_batch``. Nothing is buffered per connection; the only per-connection
state is "the token the client has acknowledged" (audit RACE-6: delivery is by stream position from
the database, so a slow or reconnecting client catches up and never loses anything).

:class:`PushSession` is the protocol state machine, independent of autobahn (unit-tested with a fake
:class:`FrameSink`)::

    awaiting_auth --auth frame--> authenticating --ok--> streaming --close/error--> closed

* **auth.** The first client frame is ``{"type": "auth", "access_token", "since"?, "filter"?}``.
  Tokens never travel in URLs. No auth frame within ``auth_timeout_s``: close 4408.
* **stop and wait.** While streaming, the session loops: wait until the transport can take data,
  ask the engine for ``since`` (a long poll holding one notifier registration), send one
  ``{"type": "sync", "next_batch", "body"}`` frame, then wait for ``{"type": "ack", "next_batch"}``
  naming exactly that frame. Only then does ``since`` advance to it. So at most one frame is ever
  unacknowledged, and wake-ups that arrive meanwhile (or while the transport is backed up) are not
  queued: the next frame is computed afresh from the acknowledged token and carries everything.
  No ack within ``idle_timeout_s``: close 4408.
* **registrations.** The session holds at most one engine call, hence at most one notifier waiter,
  at a time; closing the connection cancels that call, which unregisters the waiter (audit
  RACE-1/2). Identical engine calls (same user, device, token, filter) share one computation.
* **resume.** A client reconnects with ``since`` = the ``next_batch`` of the last frame it
  processed and acknowledged; the server keeps nothing between connections.
* **presence.** From ``ready`` until the connection ends the session counts as one open sync for
  the engine's sync observers (presence), exactly like a long-polling ``/sync`` request: the user
  stays online while connected and the offline timer starts when the connection closes.
* **token.** The access token is checked again at least every ``token_recheck_s`` (the long poll is
  cut to that length), so a logged-out device's connections close with 4401.

:class:`SyncPushEndpoint` is the Twisted resource mounted on the client JSON resource: it admits or
refuses the upgrade (rate limit, per-IP limit, no tokens in the query string), then hands the
connection to autobahn's :class:`SyncPushProtocol`, which adapts autobahn callbacks to the session
and backpressure (``IPushProducer``) to :meth:`PushSession.pause_writing`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from homeserver.http.cors import add_cors_headers
from homeserver.http.server import encode_json_body
from homeserver.http.site import client_ip_of
from homeserver.sync.engine import SyncEngine, SyncRequest
from homeserver.sync.filters import SyncFilter
from homeserver.sync.sources.registry import JsonDict
from homeserver.util.clock import Clock, DelayedCall
from sc_proto.errors import Codes, MatrixError

logger = logging.getLogger(__name__)

WS_PATH = "/_sc/client/v1/sync/ws"
"""Where the endpoint is mounted (fixed; not configurable)."""

CLOSE_NORMAL = 1000
CLOSE_SHUTDOWN = 4503
"""The server is shutting down: reconnect (with backoff) from the last acknowledged token."""
CLOSE_PROTOCOL_ERROR = 4400
"""Malformed or unexpected client frame, bad ``since`` token or filter."""
CLOSE_AUTH_FAILED = 4401
"""Missing, unknown, expired or revoked access token, locked or deactivated account."""
CLOSE_FORBIDDEN = 4403
"""The token is valid but may not use this endpoint (e.g. a guest)."""
CLOSE_TIMEOUT = 4408
"""No ``auth`` frame in time, or a ``sync`` frame left unacknowledged too long."""
CLOSE_TOO_MANY = 4429
"""The user already holds ``max_connections_per_user`` connections."""
CLOSE_INTERNAL = 4500
"""Unexpected server error (logged)."""

_STANDARD_KEYS = frozenset(
    {"next_batch", "rooms", "account_data", "presence", "to_device", "device_lists",
     "device_one_time_keys_count", "device_unused_fallback_key_types"}
)
_MAX_CLOSE_REASON = 120  # RFC 6455: at most 123 bytes of reason


@dataclass(frozen=True)
class PushSettings:
    """Timers of a :class:`PushSession`.

    Attributes:
        auth_timeout_s: how long to wait for the ``auth`` frame.
        idle_timeout_s: how long a ``sync`` frame may stay unacknowledged.
        token_recheck_s: how often the access token is validated again (and the long-poll length).
    """

    auth_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    token_recheck_s: float = 60.0


@dataclass(frozen=True)
class Authenticated:
    """Who an access token belongs to."""

    user_id: str
    device_id: str | None


Authenticate = Callable[[str, str], Awaitable[Authenticated]]
"""``(access_token, client_ip) -> owner``; raises :class:`MatrixError` (401/403) when refused."""

LoadFilter = Callable[[str, object], Awaitable[tuple[SyncFilter, str]]]
"""``(user_id, raw filter: None | filter ID | filter object) -> (filter, sharing key)``."""


class FrameSink(Protocol):
    """Where a session writes (the autobahn protocol, or a fake in tests)."""

    def send_frame(self, frame: JsonDict) -> None:
        """Sends one JSON text message."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Starts the closing handshake with ``code``."""
        ...


def sync_body_is_empty(body: JsonDict) -> bool:
    """True when a ``/sync`` body tells the client nothing (mirrors ``SyncResult.is_empty``)."""
    rooms = body.get("rooms") or {}
    if any(rooms.get(section) for section in ("join", "invite", "leave", "knock")):
        return False
    for section in ("account_data", "presence", "to_device"):
        if (body.get(section) or {}).get("events"):
            return False
    device_lists = body.get("device_lists") or {}
    if device_lists.get("changed") or device_lists.get("left"):
        return False
    return not any(value for key, value in body.items() if key not in _STANDARD_KEYS)


def close_code_for(error: MatrixError) -> int:
    """The close code for a refusal: 4401 for 401, 4403 for 403, 4429 for 429, else 4400."""
    return {401: CLOSE_AUTH_FAILED, 403: CLOSE_FORBIDDEN, 429: CLOSE_TOO_MANY}.get(
        error.http_status, CLOSE_PROTOCOL_ERROR if error.http_status < 500 else CLOSE_INTERNAL
    )


def parse_client_frame(payload: bytes, is_binary: bool) -> JsonDict:
    """Decodes one client message: a UTF-8 JSON object with a string ``type``.

    Raises:
        MatrixError: 400 ``M_NOT_JSON`` / ``M_BAD_JSON`` for anything else.
    """
    if is_binary:
        raise MatrixError(400, Codes.BAD_JSON, "Frames must be text (JSON)")
    try:
        frame = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MatrixError(400, Codes.NOT_JSON, "Frame is not valid JSON") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise MatrixError(400, Codes.BAD_JSON, "Frame must be an object with a string 'type'")
    return frame


class ConnectionLimits:
    """Counts open connections per client IP (from the upgrade on) and per user (once authenticated).

    Args:
        per_user: most connections one user may hold.
        per_ip: most connections from one IP.
    """

    def __init__(self, per_user: int, per_ip: int) -> None:
        self.per_user = per_user
        self.per_ip = per_ip
        self._by_ip: dict[str, int] = {}
        self._by_user: dict[str, set[object]] = {}

    def open_ip(self, ip: str) -> bool:
        """Takes a slot for ``ip``; False (nothing taken) when it has none left."""
        count = self._by_ip.get(ip, 0)
        if count >= self.per_ip:
            return False
        self._by_ip[ip] = count + 1
        return True

    def release_ip(self, ip: str) -> None:
        """Gives back a slot taken by :meth:`open_ip`."""
        count = self._by_ip.get(ip, 0) - 1
        if count > 0:
            self._by_ip[ip] = count
        else:
            self._by_ip.pop(ip, None)

    def add_user(self, user_id: str, owner: object) -> bool:
        """Counts ``owner`` as one of ``user_id``'s connections; False when the user has none left."""
        owners = self._by_user.setdefault(user_id, set())
        if owner in owners:
            return True
        if len(owners) >= self.per_user:
            return False
        owners.add(owner)
        return True

    def remove_user(self, user_id: str, owner: object) -> None:
        """Stops counting ``owner``."""
        owners = self._by_user.get(user_id)
        if owners is not None:
            owners.discard(owner)
            if not owners:
                del self._by_user[user_id]

    def ip_count(self, ip: str) -> int:
        return self._by_ip.get(ip, 0)

    def user_count(self, user_id: str) -> int:
        return len(self._by_user.get(user_id, ()))


class PushSession:
    """One connection's protocol state (see the module docstring).

    Args:
        sink: where frames go.
        engine: the sync engine (the same one ``/sync`` uses).
        authenticate: validates access tokens.
        load_filter: resolves the ``filter`` of the auth frame.
        limits: the per-user connection limit.
        clock: timers.
        settings: timeouts.
        client_ip: the peer, for authentication bookkeeping.
    """

    def __init__(
        self,
        sink: FrameSink,
        engine: SyncEngine,
        authenticate: Authenticate,
        load_filter: LoadFilter,
        limits: ConnectionLimits,
        clock: Clock,
        settings: PushSettings,
        client_ip: str,
    ) -> None:
        self._sink = sink
        self._engine = engine
        self._authenticate = authenticate
        self._load_filter = load_filter
        self._limits = limits
        self._clock = clock
        self._settings = settings
        self.client_ip = client_ip
        self.state = "new"
        self.user_id: str | None = None
        self.device_id: str | None = None
        self.frames_sent = 0
        self.last_acked: str | None = None
        self._token: str | None = None
        self._authed_at = 0.0
        self._task: defer.Deferred[None] | None = None
        self._timer: DelayedCall | None = None
        self._outstanding: str | None = None
        self._ack_waiter: defer.Deferred[None] | None = None
        self._paused = False
        self._writable_waiter: defer.Deferred[None] | None = None
        self._sync_finished: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ transport events

    def opened(self) -> None:
        """The WebSocket is open: wait for the auth frame."""
        if self.state != "new":
            return
        self.state = "awaiting_auth"
        self._set_timer(self._settings.auth_timeout_s, "No auth frame received in time")

    def message_received(self, payload: bytes, is_binary: bool) -> None:
        """Handles one client message."""
        if self.state in ("closing", "closed"):
            return
        try:
            frame = parse_client_frame(payload, is_binary)
            kind = frame["type"]
            if kind == "auth":
                self._on_auth(frame)
            elif kind == "ack":
                self._on_ack(frame)
            # Unknown frame types are ignored, so newer clients can talk to older servers.
        except MatrixError as error:
            self.fail(close_code_for(error), error.errcode.value, error.message)

    def pause_writing(self) -> None:
        """The transport's buffer is full: compute nothing new until :meth:`resume_writing`."""
        self._paused = True

    def resume_writing(self) -> None:
        """The transport drained."""
        self._paused = False
        waiter, self._writable_waiter = self._writable_waiter, None
        if waiter is not None and not waiter.called:
            waiter.callback(None)

    def closed(self) -> None:
        """The connection is gone: cancel the engine call (and its notifier waiter) and timers."""
        if self.state == "closed":
            return
        self.state = "closed"
        self._cancel_timer()
        task, self._task = self._task, None
        if task is not None and not task.called:
            task.cancel()
        if self.user_id is not None:
            self._limits.remove_user(self.user_id, self)
        self._token = None
        self._end_sync()

    def fail(self, code: int, errcode: str, message: str) -> None:
        """Sends an ``error`` frame and closes with ``code`` (the reason is the errcode)."""
        if self.state in ("closing", "closed"):
            return
        self.state = "closing"
        self._cancel_timer()
        task, self._task = self._task, None
        if task is not None and not task.called:
            task.cancel()
        self._end_sync()
        try:
            self._sink.send_frame({"type": "error", "errcode": errcode, "error": message})
        finally:
            self._sink.close(code, errcode[:_MAX_CLOSE_REASON])

    # ------------------------------------------------------------------ client frames

    def _on_auth(self, frame: JsonDict) -> None:
        if self.state != "awaiting_auth":
            raise MatrixError(400, Codes.BAD_JSON, "Unexpected auth frame")
        token = frame.get("access_token")
        if not isinstance(token, str) or not token:
            raise MatrixError(401, Codes.MISSING_TOKEN, "The auth frame needs an access_token")
        since = frame.get("since")
        if since is not None and not isinstance(since, str):
            raise MatrixError(400, Codes.INVALID_PARAM, "'since' must be a string")
        raw_filter = frame.get("filter")
        if raw_filter is not None and not isinstance(raw_filter, str | dict):
            raise MatrixError(400, Codes.INVALID_PARAM, "'filter' must be a filter ID or an object")
        self.state = "authenticating"
        self._token = token
        task = defer.Deferred.fromCoroutine(self._run(token, since, raw_filter))
        if not task.called:
            self._task = task
        task.addErrback(self._task_failed)

    def _on_ack(self, frame: JsonDict) -> None:
        if self.state != "streaming" or self._outstanding is None:
            raise MatrixError(400, Codes.BAD_JSON, "Nothing to acknowledge")
        if frame.get("next_batch") != self._outstanding:
            raise MatrixError(400, Codes.INVALID_PARAM, "The ack does not name the last sync frame")
        self.last_acked, self._outstanding = self._outstanding, None
        self._cancel_timer()
        waiter, self._ack_waiter = self._ack_waiter, None
        if waiter is not None and not waiter.called:
            waiter.callback(None)

    # ------------------------------------------------------------------ the stream

    async def _run(self, token: str, since: str | None, raw_filter: object) -> None:
        who = await self._authenticate(token, self.client_ip)
        self._authed_at = self._clock.time()
        sync_filter, filter_key = await self._load_filter(who.user_id, raw_filter)
        if since is not None:
            await self._engine.decode_since(since, await self._engine.current_token())
        if self.state != "authenticating":
            return
        if not self._limits.add_user(who.user_id, self):
            raise MatrixError(429, Codes.LIMIT_EXCEEDED, "Too many WebSocket connections for this user")
        self.user_id, self.device_id = who.user_id, who.device_id
        self.state = "streaming"
        # Like a /sync request, the connection counts as syncing (presence) until it ends.
        self._sync_finished = [observe(who.user_id, who.device_id, None) for observe in self._engine.sync_observers]
        self._cancel_timer()
        self._sink.send_frame({"type": "ready", "user_id": who.user_id, "device_id": who.device_id})
        logger.info("websocket sync opened", extra={"user_id": who.user_id, "device_id": who.device_id})
        await self._stream(who, since, sync_filter, filter_key)

    def _end_sync(self) -> None:
        """Tells the sync observers the connection's sync ended (once)."""
        finished, self._sync_finished = self._sync_finished, []
        for done in finished:
            done()

    async def _stream(self, who: Authenticated, since: str | None, sync_filter: SyncFilter, key: str) -> None:
        wait_ms = int(self._settings.token_recheck_s * 1000)
        while self.state == "streaming":
            if self._paused:
                self._writable_waiter = defer.Deferred()
                await self._writable_waiter
            await self._recheck_token(who)
            body = await self._engine.sync(
                SyncRequest(
                    user_id=who.user_id,
                    device_id=who.device_id,
                    since=since,
                    filter=sync_filter,
                    filter_key=key,
                    timeout_ms=0 if since is None else wait_ms,
                )
            )
            next_batch = body["next_batch"]
            if since is not None and sync_body_is_empty(body):
                # The long poll ran out: nothing for this user up to next_batch, so later polls
                # may start there (the client's own resume token does not need to move).
                since = next_batch
                continue
            if self.state != "streaming":
                return
            self._outstanding = next_batch
            self._ack_waiter = defer.Deferred()
            self._sink.send_frame({"type": "sync", "next_batch": next_batch, "body": body})
            self.frames_sent += 1
            self._set_timer(self._settings.idle_timeout_s, "The last sync frame was not acknowledged in time")
            await self._ack_waiter
            since = next_batch

    async def _recheck_token(self, who: Authenticated) -> None:
        if self._clock.time() - self._authed_at < self._settings.token_recheck_s or self._token is None:
            return
        again = await self._authenticate(self._token, self.client_ip)
        if (again.user_id, again.device_id) != (who.user_id, who.device_id):
            raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Access token is no longer valid")
        self._authed_at = self._clock.time()

    def _task_failed(self, failure: Failure) -> None:
        error = failure.value
        if isinstance(error, defer.CancelledError):
            return
        if isinstance(error, MatrixError):
            if error.http_status >= 500:
                logger.warning("websocket sync failed: %r", error)
            self.fail(close_code_for(error), error.errcode.value, error.message)
            return
        logger.error("websocket sync failed: %s", _untyped(failure).getTraceback())
        self.fail(CLOSE_INTERNAL, Codes.UNKNOWN.value, "Internal server error")

    # ------------------------------------------------------------------ timers

    def _set_timer(self, delay_s: float, message: str) -> None:
        self._cancel_timer()
        self._timer = self._clock.call_later(delay_s, self._timed_out, message)

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _timed_out(self, message: str) -> None:
        self._timer = None
        self.fail(CLOSE_TIMEOUT, Codes.UNKNOWN.value, message)


# ---------------------------------------------------------------------------------------- autobahn


SessionFactory = Callable[[FrameSink, str], PushSession]
"""``(sink, client_ip) -> session``."""


class SyncPushProtocol(WebSocketServerProtocol):
    """Adapts autobahn's callbacks to a :class:`PushSession`; also the transport's push producer."""

    session: PushSession | None = None
    on_gone: Callable[[SyncPushProtocol], None] | None = None
    inbound_limit = 0
    _gone = False

    def onOpen(self) -> None:
        """The handshake completed: become the transport's producer (backpressure), start the session."""
        transport: Any = self.transport
        try:
            transport.unregisterProducer()  # the HTTP channel we took the connection from
            transport.registerProducer(self, True)
        except (AttributeError, RuntimeError):
            logger.debug("transport does not support producers")
        if self.session is not None:
            self.session.opened()

    def onMessageFrameBegin(self, length: int) -> None:
        """Enforces the inbound message limit (autobahn's own limit would also cap what we send)."""
        super().onMessageFrameBegin(length)
        if 0 < self.inbound_limit < self.message_data_total_length and not self.failedByMe:
            self._fail_connection(
                WebSocketServerProtocol.CLOSE_STATUS_CODE_MESSAGE_TOO_BIG, "message too big"
            )

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.session is not None:
            self.session.message_received(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._finish()

    def connectionLost(self, reason: Failure | None = None) -> None:
        try:
            super().connectionLost(reason if reason is not None else _untyped(Failure)(ConnectionDone()))
        finally:
            self._finish()

    def _finish(self) -> None:
        if self._gone:
            return
        self._gone = True
        if self.session is not None:
            self.session.closed()
        if self.on_gone is not None:
            self.on_gone(self)

    # IPushProducer, called by the transport
    def pauseProducing(self) -> None:
        if self.session is not None:
            self.session.pause_writing()

    def resumeProducing(self) -> None:
        if self.session is not None:
            self.session.resume_writing()

    def stopProducing(self) -> None:
        """The transport is going away; :meth:`connectionLost` follows."""

    # FrameSink
    def send_frame(self, frame: JsonDict) -> None:
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            _untyped(self).sendMessage(encode_json_body(frame), isBinary=False)

    def close(self, code: int, reason: str) -> None:
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            self.sendClose(code, reason)
        elif self.state != WebSocketServerProtocol.STATE_CLOSED:
            self.dropConnection(abort=True)


class ReactorTimer:
    """autobahn's timer interface (``call_later`` returning something with ``cancel``) on a given reactor.

    autobahn would otherwise schedule its keepalive and handshake timers on txaio's global loop;
    this keeps them on the homeserver's reactor (the fake one in tests).
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any, **kwargs: Any) -> _TimerCall:
        return _TimerCall(self._reactor.callLater(delay, fn, *args, **kwargs))


class _TimerCall:
    __slots__ = ("_call",)

    def __init__(self, call: Any) -> None:
        self._call = call

    def cancel(self) -> None:
        if self._call.active():
            self._call.cancel()


@dataclass(frozen=True)
class EndpointOptions:
    """Transport options of :class:`SyncPushEndpoint` (from the ``websocket`` config section)."""

    ping_interval_s: float = 30.0
    ping_timeout_s: float = 30.0
    max_frame_size: int = 64 * 1024
    open_handshake_timeout_s: float = 10.0
    close_handshake_timeout_s: float = 2.0


@implementer(IResource)
class SyncPushEndpoint:
    """The Twisted resource serving :data:`WS_PATH`.

    Args:
        make_session: builds a session for an accepted connection.
        limits: connection limits (the per-IP one is applied here).
        options: transport options.
        admit: checks an upgrade request before anything else (e.g. the rate limiter); raises
            :class:`MatrixError` to refuse it.
        reactor: the reactor (autobahn's factory).
    """

    isLeaf = True

    def __init__(
        self,
        make_session: SessionFactory,
        limits: ConnectionLimits,
        options: EndpointOptions,
        admit: Callable[[Request, str], None],
        reactor: Any,
    ) -> None:
        self._make_session = make_session
        self.limits = limits
        self._admit = admit
        self._inbound_limit = options.max_frame_size
        factory: Any = _untyped(WebSocketServerFactory)(reactor=reactor)
        factory.protocol = SyncPushProtocol
        factory.setProtocolOptions(
            autoPingInterval=options.ping_interval_s,
            autoPingTimeout=options.ping_timeout_s,
            maxFramePayloadSize=options.max_frame_size,
            maxMessagePayloadSize=0,  # would also cap outgoing frames; see onMessageFrameBegin
            openHandshakeTimeout=options.open_handshake_timeout_s,
            closeHandshakeTimeout=options.close_handshake_timeout_s,
            failByDrop=False,  # tell the client why (e.g. 1009) instead of just dropping TCP
        )
        # autobahn's keepalive and handshake timers run on our reactor (the fake one in tests).
        factory._batched_timer = ReactorTimer(reactor)
        self._factory = factory
        self.connections: set[SyncPushProtocol] = set()
        self._all_gone: list[defer.Deferred[None]] = []

    # IResource
    def getChildWithDefault(self, name: bytes, request: Request) -> Any:
        return self

    def putChild(self, path: bytes, child: IResource) -> None:
        raise NotImplementedError("the WebSocket endpoint has no children")

    def render(self, request: Request) -> bytes | int:
        """Admits the upgrade and hands the connection to autobahn, or answers a JSON error."""
        ip = client_ip_of(request)
        try:
            self._check_request(request, ip)
        except MatrixError as error:
            return _json_error(request, error)
        if not self.limits.open_ip(ip):
            return _json_error(
                request, MatrixError(429, Codes.LIMIT_EXCEEDED, "Too many WebSocket connections from this address")
            )
        try:
            self._take_over(request, ip)
        except Exception:
            self.limits.release_ip(ip)
            logger.exception("websocket upgrade failed")
            return _json_error(request, MatrixError(500, Codes.UNKNOWN, "Internal server error"))
        return NOT_DONE_YET

    def _check_request(self, request: Request, ip: str) -> None:
        if request.method != b"GET":
            raise MatrixError(405, Codes.UNRECOGNIZED, "Only GET (a WebSocket upgrade) is allowed")
        upgrade = (request.getHeader(b"Upgrade") or b"").lower()
        if upgrade != b"websocket":
            raise MatrixError(426, Codes.UNRECOGNIZED, "This endpoint needs a WebSocket upgrade")
        if b"access_token" in (request.args or {}):
            # Tokens in URLs end up in proxy logs; this endpoint takes them in the auth frame only.
            raise MatrixError(400, Codes.INVALID_PARAM, "Send the access token in the auth frame, not the URL")
        if request.channel is None or request.channel.transport is None:
            raise MatrixError(400, Codes.UNRECOGNIZED, "WebSocket is only available over HTTP/1.1")
        self._admit(request, ip)

    def _take_over(self, request: Request, ip: str) -> None:
        """Moves the TCP (or TLS) connection from the HTTP channel to a new autobahn protocol."""
        channel: Any = request.channel
        transport: Any = channel.transport
        http_protocol: Any
        protocol: Any = self._factory.buildProtocol(transport.getPeer())
        protocol.session = self._make_session(protocol, ip)
        protocol.inbound_limit = self._inbound_limit
        if isinstance(transport, ProtocolWrapper):
            http_protocol = transport.wrappedProtocol
            transport.wrappedProtocol = protocol
        elif isinstance(transport.protocol, ProtocolWrapper):
            http_protocol = transport.protocol.wrappedProtocol
            transport.protocol.wrappedProtocol = protocol
        else:
            http_protocol = transport.protocol
            transport.protocol = protocol
        channel.transport = None

        def gone(proto: SyncPushProtocol) -> None:
            self.connections.discard(proto)
            self.limits.release_ip(ip)
            if not self.connections:
                waiters, self._all_gone = self._all_gone, []
                for waiter in waiters:
                    waiter.callback(None)

        protocol.on_gone = gone
        self.connections.add(protocol)
        # The HTTP channel will never see this connection again: end it now, so the site stops
        # tracking it and the channel and upgrade request are freed (:meth:`close_all` closes
        # WebSockets at shutdown).
        try:
            http_protocol.connectionLost(_untyped(Failure)(ConnectionDone()))
        except Exception:
            logger.exception("releasing the HTTP channel of a websocket failed")
        protocol.makeConnection(transport)
        # Twisted pauses reading while a request is processed; no HTTP request follows this one.
        network_producer = getattr(transport, "_networkProducer", transport)
        network_producer.resumeProducing()
        # autobahn parses the handshake itself: replay the request head to it.
        head = [request.method + b" " + request.uri + b" HTTP/1.1"]
        head.extend(name + b": " + b",".join(values) for name, values in request.requestHeaders.getAllRawHeaders())
        protocol.dataReceived(b"\r\n".join(head) + b"\r\n\r\n")

    def close_all(self, code: int = CLOSE_SHUTDOWN, reason: str = "server shutting down") -> defer.Deferred[None]:
        """Closes every connection (graceful shutdown); fires when all are gone."""
        if not self.connections:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._all_gone.append(waiter)
        for protocol in list(self.connections):
            protocol.close(code, reason)
        return waiter


def _json_error(request: Request, error: MatrixError) -> bytes:
    """A plain JSON error response for a refused upgrade."""
    request.setResponseCode(error.http_status)
    headers = request.responseHeaders
    headers.setRawHeaders(b"Content-Type", [b"application/json"])
    headers.setRawHeaders(b"Cache-Control", [b"no-cache, no-store, must-revalidate"])
    if error.http_status == 426:
        headers.setRawHeaders(b"Upgrade", [b"websocket"])
    add_cors_headers(request)
    return encode_json_body(error.to_json())


def _untyped(obj: object) -> Any:
    """Returns ``obj`` as Any (autobahn and parts of Twisted are unannotated)."""
    return obj
