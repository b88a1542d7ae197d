"""Seams between the federation adapter's parts (issue 13), fixed so they can be built in parallel.

- :class:`VerifyKeyLookup` is what the transport needs from the keyring (``federation/keyring.py``):
  remote servers' verify keys, checked for validity at a point in time.
- :class:`FederationHttp` is what everything outbound needs from the client
  (``federation/transport/client.py``): signed JSON requests to a destination, with the limits of
  the ``federation:`` config section.
- :class:`FederationRouter` is how servlets register on the inbound transport
  (``federation/transport/server.py``), which checks ``X-Matrix`` and hands them a
  :class:`FederationRequest` with the authenticated origin.

Errors: lookups and requests raise :class:`~sc_proto.errors.MatrixError` (what the peer or our
client should see) or :class:`RemoteUnreachable`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sc_proto.crypto.keys import VerifyKey

JsonDict = dict[str, Any]


class RemoteUnreachable(Exception):
    """A destination could not be reached or did not answer in time (no HTTP answer at all)."""

    def __init__(self, destination: str, reason: str) -> None:
        super().__init__(f"{destination}: {reason}")
        self.destination = destination
        self.reason = reason


class RemoteHttpError(Exception):
    """A destination answered with a non-2xx status; ``body`` is its JSON (or ``{}``)."""

    def __init__(self, destination: str, status: int, body: JsonDict) -> None:
        super().__init__(f"{destination}: HTTP {status} {body.get('errcode', '')}")
        self.destination = destination
        self.status = status
        self.body = body


class VerifyKeyLookup(Protocol):
    """Remote servers' signing keys (implemented by ``federation.keyring.Keyring``)."""

    async def get_verify_key(self, server_name: str, key_id: str, at_ts: int) -> VerifyKey:
        """The key ``key_id`` of ``server_name`` that was valid at ``at_ts`` (ms).

        Served from the cache when it was valid then (``valid_until_ts >= at_ts``, or an old key whose
        ``expired_ts`` is after ``at_ts``); otherwise fetched from the origin, then from the trusted
        key servers.

        Raises:
            MatrixError: 401 ``M_UNAUTHORIZED`` when no such key valid at that time can be found.
        """

    async def verify_json_for_server(self, server_name: str, obj: Mapping[str, Any], at_ts: int) -> None:
        """Checks that ``obj`` carries a valid signature of ``server_name`` by a key valid at ``at_ts``.

        Raises:
            MatrixError: 401 ``M_UNAUTHORIZED`` (no signature, unknown key, bad signature).
        """


class FederationHttp(Protocol):
    """Signed requests to other servers (implemented by ``federation.transport.client.FederationClient``).

    Paths are full (``/_matrix/federation/v1/event/$abc``), already percent-encoded. Every request is
    resolved per the spec, refused when the address is deny-listed, bounded by ``request_timeout_s``
    and ``max_response_bytes``, and signed with ``X-Matrix`` (origin, destination, key) unless
    ``signed`` is false (key fetches).
    """

    async def get_json(
        self,
        destination: str,
        path: str,
        args: Mapping[str, Sequence[str]] | None = None,
        *,
        signed: bool = True,
        timeout_s: float | None = None,
    ) -> JsonDict:
        """GET; raises :class:`RemoteHttpError` on a non-2xx answer, :class:`RemoteUnreachable` otherwise."""

    async def put_json(
        self, destination: str, path: str, content: JsonDict, *, timeout_s: float | None = None
    ) -> JsonDict:
        """PUT with a JSON body (signed)."""

    async def post_json(
        self,
        destination: str,
        path: str,
        content: JsonDict,
        args: Mapping[str, Sequence[str]] | None = None,
        *,
        signed: bool = True,
        timeout_s: float | None = None,
    ) -> JsonDict:
        """POST with a JSON body."""


@dataclass(frozen=True)
class FederationRequest:
    """One inbound request after transport checks.

    Attributes:
        origin: the authenticated origin server (``X-Matrix`` verified, ``destination`` is us), or
            None on a route registered with ``authenticated=False`` (the key API).
        method: ``GET``, ``PUT``, ``POST``...
        path_args: the pattern's ``{name}`` segments, percent-decoded.
        query: query parameters, decoded, each a list.
        content: the parsed JSON body (None when there was none).
    """

    origin: str | None
    method: str
    path_args: Mapping[str, str]
    query: Mapping[str, Sequence[str]] = field(default_factory=dict)
    content: JsonDict | None = None


FederationHandler = Callable[[FederationRequest], Awaitable[tuple[int, JsonDict]]]
"""A servlet: the request -> (HTTP status, JSON body). Raise ``MatrixError`` for errors."""


class FederationRouter(Protocol):
    """Where federation servlets register (implemented by ``federation.transport.server``)."""

    def register(self, method: str, pattern: str, handler: FederationHandler, *, authenticated: bool = True) -> None:
        """Routes ``method pattern`` (e.g. ``/_matrix/federation/v1/event/{eventId}``) to ``handler``.

        ``authenticated`` routes refuse requests without a valid ``X-Matrix`` header (401
        ``M_UNAUTHORIZED``) and from servers outside ``domain_whitelist`` (403 ``M_FORBIDDEN``).
        """
