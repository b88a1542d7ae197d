"""Access-token authentication of client requests (spec client-server-api, "Client Authentication").

The token comes from ``Authorization: Bearer <token>``. Spec v1.20 dropped the ``access_token``
query parameter; it is accepted only when the :class:`Authenticator` is built with
``allow_query_token=True`` (for old clients).

Outcomes, in the order they are checked:

=============================  ======  ==========================================================
condition                      status  body
=============================  ======  ==========================================================
no token                       401     ``M_MISSING_TOKEN``
header and query disagree      400     ``M_INVALID_PARAM``
token not known                401     ``M_UNKNOWN_TOKEN``, ``soft_logout: false``
user deactivated               401     ``M_UNKNOWN_TOKEN``, ``soft_logout: false``
token expired                  401     ``M_UNKNOWN_TOKEN``, ``soft_logout: true``
account locked                 401     ``M_USER_LOCKED``, ``soft_logout: true`` (unless allowed)
guest on a non-guest endpoint  403     ``M_GUEST_ACCESS_FORBIDDEN``
=============================  ======  ==========================================================

Tokens are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from twisted.web.server import Request

from homeserver.auth.tokens import TokenInfo
from homeserver.http.site import SCRequest, client_ip_of
from sc_proto.errors import Codes, MatrixError

__all__ = ["Authenticator", "Requester", "TokenInfo"]

logger = logging.getLogger(__name__)

_BEARER = b"bearer"
_MAX_USER_AGENT = 512


@dataclass(frozen=True, slots=True)
class Requester:
    """The authenticated entity behind a request.

    Attributes:
        user_id: the user.
        device_id: the device, if the token has one.
        access_token_id: database id of the token used.
        is_guest: a guest account.
        is_admin: a server admin.
        ip: client IP address.
        user_agent: the ``User-Agent`` header (truncated), or ``""``.
        is_suspended: the account is suspended (endpoints answer 403 ``M_USER_SUSPENDED``
            for actions they forbid while suspended).
    """

    user_id: str
    device_id: str | None
    access_token_id: int | str
    is_guest: bool
    is_admin: bool
    ip: str
    user_agent: str
    is_suspended: bool = False


class TokenLookup(Protocol):
    """Looks access tokens up (implemented by the token store)."""

    async def lookup(self, token: str) -> TokenInfo | None:
        """Returns what is known about ``token``, or None if it is not a valid token."""
        ...


class Authenticator:
    """Turns a request's access token into a :class:`Requester`.

    Args:
        token_lookup: the token store.
        clock_time_msec: returns the current time in ms (the injected clock).
        allow_query_token: also accept the deprecated ``access_token`` query parameter.
    """

    def __init__(
        self,
        token_lookup: TokenLookup,
        clock_time_msec: Callable[[], int],
        allow_query_token: bool = False,
    ) -> None:
        self._lookup = token_lookup
        self._time_msec = clock_time_msec
        self._allow_query_token = allow_query_token

    def get_access_token(self, request: Request) -> str | None:
        """Extracts the access token from the request, or None if there is none.

        Raises:
            MatrixError: 401 ``M_MISSING_TOKEN`` for a malformed ``Authorization`` header; 400
                ``M_INVALID_PARAM`` when the header and the query parameter carry different tokens.
        """
        header_token = self._token_from_header(request)
        query_token = self._token_from_query(request)
        if header_token is not None and query_token is not None and header_token != query_token:
            # NOTSPEC: the spec no longer defines the query parameter, so mixing is ours to refuse.
            raise MatrixError(
                400, Codes.INVALID_PARAM, "Conflicting access tokens in Authorization header and query"
            )
        return header_token if header_token is not None else query_token

    def has_access_token(self, request: Request) -> bool:
        """Returns whether the request carries any access token (without validating it)."""
        if request.requestHeaders.hasHeader(b"Authorization"):
            return True
        return self._allow_query_token and b"access_token" in (request.args or {})

    async def get_requester(
        self, request: Request, allow_guest: bool = False, allow_locked: bool = False
    ) -> Requester:
        """Authenticates the request.

        Args:
            request: the request.
            allow_guest: the endpoint is open to guest accounts.
            allow_locked: the endpoint is open to locked accounts (only ``/logout`` and
                ``/logout/all`` per the spec).

        Returns:
            The requester; also recorded on the request for the access log.

        Raises:
            MatrixError: see the module docstring for each case.
        """
        token = self.get_access_token(request)
        if token is None:
            message = "Missing access token"
            if b"access_token" in (request.args or {}):
                message = "The access_token query parameter is not supported; use the Authorization header"
            raise MatrixError(401, Codes.MISSING_TOKEN, message)
        info = await self._lookup.lookup(token)
        if info is None or info.deactivated:
            raise MatrixError(
                401, Codes.UNKNOWN_TOKEN, "Unrecognised access token", extra={"soft_logout": False}
            )
        if info.expires_at_ms is not None and self._time_msec() >= info.expires_at_ms:
            raise MatrixError(
                401, Codes.UNKNOWN_TOKEN, "Access token has expired", extra={"soft_logout": True}
            )
        if info.locked and not allow_locked:
            raise MatrixError(
                401, Codes.USER_LOCKED, "This account has been locked", extra={"soft_logout": True}
            )
        if info.is_guest and not allow_guest:
            raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guest access not allowed")
        requester = Requester(
            user_id=info.user_id,
            device_id=info.device_id,
            access_token_id=info.token_id,
            is_guest=info.is_guest,
            is_admin=info.is_admin,
            ip=client_ip_of(request),
            user_agent=_user_agent(request),
            is_suspended=info.suspended,
        )
        if isinstance(request, SCRequest):
            request.authenticated_entity = info.user_id
        return requester

    async def get_optional_requester(
        self, request: Request, allow_guest: bool = False, allow_locked: bool = False
    ) -> Requester | None:
        """Like :meth:`get_requester`, but returns None when the request carries no token.

        A token that is present but invalid still fails, so clients learn their token is bad.
        """
        if self.get_access_token(request) is None:
            return None
        return await self.get_requester(request, allow_guest=allow_guest, allow_locked=allow_locked)

    @staticmethod
    def _token_from_header(request: Request) -> str | None:
        values = request.requestHeaders.getRawHeaders(b"Authorization")
        if not values:
            return None
        if len(values) > 1:
            raise MatrixError(401, Codes.MISSING_TOKEN, "Too many Authorization headers")
        scheme, _, credentials = values[0].strip().partition(b" ")
        credentials = credentials.strip()
        # RFC 9110: the auth scheme is case-insensitive.
        if scheme.lower() != _BEARER or not credentials:
            raise MatrixError(401, Codes.MISSING_TOKEN, "Invalid Authorization header")
        try:
            return credentials.decode("ascii")
        except UnicodeDecodeError:
            raise MatrixError(
                401, Codes.UNKNOWN_TOKEN, "Unrecognised access token", extra={"soft_logout": False}
            ) from None

    def _token_from_query(self, request: Request) -> str | None:
        if not self._allow_query_token:
            return None
        values = (request.args or {}).get(b"access_token")
        if not values:
            return None
        first: bytes = values[0]
        try:
            return first.decode("ascii")
        except UnicodeDecodeError:
            raise MatrixError(
                401, Codes.UNKNOWN_TOKEN, "Unrecognised access token", extra={"soft_logout": False}
            ) from None


def _user_agent(request: Request) -> str:
    if isinstance(request, SCRequest):
        return request.get_user_agent()
    value = request.getHeader(b"User-Agent")
    if not value:
        return ""
    return value.decode("utf-8", errors="replace")[:_MAX_USER_AGENT]
