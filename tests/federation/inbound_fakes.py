"""Fakes of the federation seams (``federation/interfaces.py``) for the inbound-events tests.

* :class:`FakeRouter` records registered handlers and calls them with a :class:`FederationRequest`.
* :class:`FakeKeyring` knows a fixed set of ``(server, key_id) -> VerifyKey`` (keys made with sc_proto).
* :class:`FakeRemote` is a :class:`FederationHttp` routing to in-memory handlers of a remote server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from federation.interfaces import (
    FederationHandler,
    FederationRequest,
    JsonDict,
    RemoteHttpError,
    RemoteUnreachable,
)
from sc_proto.crypto.signing import verify_json
from sc_proto.errors import Codes, MatrixError, SignatureError
from tests.federation.fakes import FakeKeys


class FakeRouter:
    """Records routes; :meth:`call` invokes one as the transport would after authenticating."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], FederationHandler] = {}

    def register(self, method: str, pattern: str, handler: FederationHandler, *, authenticated: bool = True) -> None:
        assert (method, pattern) not in self.routes, (method, pattern)
        self.routes[(method, pattern)] = handler

    async def call(
        self,
        method: str,
        pattern: str,
        origin: str | None,
        path_args: Mapping[str, str],
        query: Mapping[str, Sequence[str]] | None = None,
        content: JsonDict | None = None,
    ) -> tuple[int, JsonDict]:
        request = FederationRequest(origin, method, dict(path_args), dict(query or {}), content)
        return await self.routes[(method, pattern)](request)


class FakeKeyring(FakeKeys):
    """:class:`~tests.federation.fakes.FakeKeys` that also verifies whole JSON objects; ``lookups``
    records ``(server, key_id, at_ts)``."""

    async def verify_json_for_server(self, server_name: str, obj: Mapping[str, Any], at_ts: int) -> None:
        for (server, key_id), key in self.keys.items():
            if server == server_name:
                try:
                    verify_json(obj, server_name, key, key_id=key_id)
                    return
                except SignatureError:
                    continue
        raise MatrixError(401, Codes.UNAUTHORIZED, "no valid signature")


RemoteHandler = Callable[[str, Mapping[str, Sequence[str]], JsonDict | None], Awaitable[JsonDict] | JsonDict]


class FakeRemote:
    """A :class:`FederationHttp` whose destinations answer from ``handlers[(method, path)]``.

    A handler gets ``(destination, args, content)`` and returns the JSON body, or raises
    :class:`RemoteHttpError`/:class:`RemoteUnreachable`. Unknown paths answer 404. ``calls`` records
    ``(method, destination, path, args, content)``.
    """

    def __init__(self) -> None:
        self.handlers: dict[tuple[str, str], Any] = {}
        self.calls: list[tuple[str, str, str, Any, Any]] = []
        self.unreachable: set[str] = set()

    async def _answer(self, method: str, destination: str, path: str, args: Any, content: Any) -> JsonDict:
        self.calls.append((method, destination, path, args, content))
        if destination in self.unreachable:
            raise RemoteUnreachable(destination, "connection refused")
        handler = self.handlers.get((method, path))
        if handler is None:
            raise RemoteHttpError(destination, 404, {"errcode": "M_NOT_FOUND"})
        result = handler(destination, args or {}, content)
        if hasattr(result, "__await__"):
            result = await result
        return dict(result)

    async def get_json(
        self, destination: str, path: str, args: Mapping[str, Sequence[str]] | None = None, *,
        signed: bool = True, timeout_s: float | None = None,
    ) -> JsonDict:
        return await self._answer("GET", destination, path, args, None)

    async def put_json(self, destination: str, path: str, content: JsonDict, *, timeout_s: float | None = None) -> JsonDict:
        return await self._answer("PUT", destination, path, None, content)

    async def post_json(
        self, destination: str, path: str, content: JsonDict, args: Mapping[str, Sequence[str]] | None = None, *,
        signed: bool = True, timeout_s: float | None = None,
    ) -> JsonDict:
        return await self._answer("POST", destination, path, args, content)
