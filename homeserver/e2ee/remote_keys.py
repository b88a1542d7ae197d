"""Asking other servers for E2EE keys through the :class:`~homeserver.api.ports.RemoteKeyQuerier` port.

``/keys/query`` and ``/keys/claim`` send one request per server named, concurrently. A server that
fails is reported in the response's ``failures`` object under its server name (spec client-server
API, "POST /keys/query": "If any remote homeservers could not be reached, they are recorded here"),
as ``{"status": <HTTP status>, "message": <error>}``; the answers of the others are merged in. A
remote server's answer is only trusted for its own users.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from twisted.internet import defer

from sc_proto.errors import InvalidIdentifierError, MatrixError
from sc_proto.identifiers import UserID

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

DEFAULT_TIMEOUT_MS = 10_000
"""How long a remote key query or claim may take when the request names no ``timeout`` (spec default)."""

MAX_TIMEOUT_MS = 60_000
"""Longest ``timeout`` honoured (NOTSPEC: the spec sets no maximum; larger values are clamped)."""


def remote_failure(error: BaseException) -> JsonDict:
    """The ``failures`` entry for a server whose request failed."""
    if isinstance(error, MatrixError):
        return {"status": error.http_status, "message": error.message}
    logger.warning("remote key request failed: %s", type(error).__name__)
    return {"status": 503, "message": "Remote server unavailable"}


async def ask_each_server(
    requests: Mapping[str, Callable[[], Awaitable[JsonDict]]],
) -> tuple[dict[str, JsonDict], JsonDict]:
    """Runs one request per server concurrently.

    Args:
        requests: server name -> a function making the request.

    Returns:
        ``(answers by server, failures by server)``.
    """
    answers: dict[str, JsonDict] = {}
    failures: JsonDict = {}

    async def ask(server: str, request: Callable[[], Awaitable[JsonDict]]) -> None:
        try:
            answer = await request()
        except Exception as e:  # a boundary: any failure of one server is that server's failure
            failures[server] = remote_failure(e)
            return
        answers[server] = answer if isinstance(answer, dict) else {}

    await defer.gatherResults([defer.ensureDeferred(ask(s, r)) for s, r in requests.items()])
    return answers, failures


def users_of(answer: Any, server: str) -> dict[str, Any]:
    """The entries of a ``user ID -> ...`` object that belong to ``server``'s users."""
    if not isinstance(answer, Mapping):
        return {}
    out: dict[str, Any] = {}
    for user_id, value in answer.items():
        try:
            if UserID.parse(user_id, historical=True).domain == server:
                out[user_id] = value
        except InvalidIdentifierError:
            continue
    return out


def clamp_timeout(timeout_ms: int | None) -> int:
    """The request's ``timeout`` within ``[0, MAX_TIMEOUT_MS]`` (default :data:`DEFAULT_TIMEOUT_MS`)."""
    return DEFAULT_TIMEOUT_MS if timeout_ms is None else max(0, min(timeout_ms, MAX_TIMEOUT_MS))
