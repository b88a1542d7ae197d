"""Matrix error codes and the exception types sc_proto raises.

Three families, kept apart on purpose (h11's lesson):

* :class:`MatrixError` is a failure that a Matrix peer (client or server) should see, with an
  ``errcode``, an HTTP status and optional extra JSON fields.
* :class:`LocalProtocolError` means *our* caller misused the library (a bug on this side).
* :class:`RemoteProtocolError` means a peer sent something malformed; it carries a :class:`Codes`
  member and a status so a host can answer the peer with a sensible error.

Every parser in sc_proto raises one of these (usually a subclass of :class:`RemoteProtocolError`)
and never lets a ``KeyError``/``TypeError``/``ValueError`` escape to callers.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any


class Codes(str, enum.Enum):
    """Every ``errcode`` the Matrix specification defines (Client-Server and Server-Server APIs)."""

    FORBIDDEN = "M_FORBIDDEN"
    UNKNOWN_TOKEN = "M_UNKNOWN_TOKEN"
    MISSING_TOKEN = "M_MISSING_TOKEN"
    USER_LOCKED = "M_USER_LOCKED"
    USER_SUSPENDED = "M_USER_SUSPENDED"
    BAD_JSON = "M_BAD_JSON"
    NOT_JSON = "M_NOT_JSON"
    NOT_FOUND = "M_NOT_FOUND"
    LIMIT_EXCEEDED = "M_LIMIT_EXCEEDED"
    UNRECOGNIZED = "M_UNRECOGNIZED"
    UNKNOWN = "M_UNKNOWN"
    UNAUTHORIZED = "M_UNAUTHORIZED"
    USER_DEACTIVATED = "M_USER_DEACTIVATED"
    USER_IN_USE = "M_USER_IN_USE"
    INVALID_USERNAME = "M_INVALID_USERNAME"
    ROOM_IN_USE = "M_ROOM_IN_USE"
    INVALID_ROOM_STATE = "M_INVALID_ROOM_STATE"
    THREEPID_IN_USE = "M_THREEPID_IN_USE"
    THREEPID_NOT_FOUND = "M_THREEPID_NOT_FOUND"
    THREEPID_AUTH_FAILED = "M_THREEPID_AUTH_FAILED"
    THREEPID_DENIED = "M_THREEPID_DENIED"
    THREEPID_MEDIUM_NOT_SUPPORTED = "M_THREEPID_MEDIUM_NOT_SUPPORTED"
    SERVER_NOT_TRUSTED = "M_SERVER_NOT_TRUSTED"
    UNSUPPORTED_ROOM_VERSION = "M_UNSUPPORTED_ROOM_VERSION"
    INCOMPATIBLE_ROOM_VERSION = "M_INCOMPATIBLE_ROOM_VERSION"
    BAD_STATE = "M_BAD_STATE"
    GUEST_ACCESS_FORBIDDEN = "M_GUEST_ACCESS_FORBIDDEN"
    CAPTCHA_NEEDED = "M_CAPTCHA_NEEDED"
    CAPTCHA_INVALID = "M_CAPTCHA_INVALID"
    MISSING_PARAM = "M_MISSING_PARAM"
    MISSING_PARAMS = "M_MISSING_PARAMS"
    INVALID_PARAM = "M_INVALID_PARAM"
    TOO_LARGE = "M_TOO_LARGE"
    EXCLUSIVE = "M_EXCLUSIVE"
    RESOURCE_LIMIT_EXCEEDED = "M_RESOURCE_LIMIT_EXCEEDED"
    CANNOT_LEAVE_SERVER_NOTICE_ROOM = "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM"
    WEAK_PASSWORD = "M_WEAK_PASSWORD"
    UNKNOWN_DEVICE = "M_UNKNOWN_DEVICE"
    UNABLE_TO_AUTHORISE_JOIN = "M_UNABLE_TO_AUTHORISE_JOIN"
    UNABLE_TO_GRANT_JOIN = "M_UNABLE_TO_GRANT_JOIN"
    INVITE_BLOCKED = "M_INVITE_BLOCKED"
    USER_LIMIT_EXCEEDED = "M_USER_LIMIT_EXCEEDED"
    TERMS_NOT_SIGNED = "M_TERMS_NOT_SIGNED"
    APPSERVICE_LOGIN_UNSUPPORTED = "M_APPSERVICE_LOGIN_UNSUPPORTED"
    INVALID_EMAIL = "M_INVALID_EMAIL"
    EMAIL_SEND_ERROR = "M_EMAIL_SEND_ERROR"
    INVALID_ADDRESS = "M_INVALID_ADDRESS"
    SEND_ERROR = "M_SEND_ERROR"
    SESSION_NOT_VALIDATED = "M_SESSION_NOT_VALIDATED"
    SESSION_EXPIRED = "M_SESSION_EXPIRED"
    NO_VALID_SESSION = "M_NO_VALID_SESSION"
    DUPLICATE_ANNOTATION = "M_DUPLICATE_ANNOTATION"
    CONNECTION_FAILED = "M_CONNECTION_FAILED"
    BAD_STATUS = "M_BAD_STATUS"
    NOT_YET_UPLOADED = "M_NOT_YET_UPLOADED"
    CANNOT_OVERWRITE_MEDIA = "M_CANNOT_OVERWRITE_MEDIA"
    BAD_ALIAS = "M_BAD_ALIAS"
    INVALID_SIGNATURE = "M_INVALID_SIGNATURE"
    WRONG_ROOM_KEYS_VERSION = "M_WRONG_ROOM_KEYS_VERSION"


class MatrixError(Exception):
    """A failure to report to a Matrix peer as ``{"errcode": ..., "error": ...}``.

    Args:
        http_status: HTTP status code of the response.
        errcode: the Matrix error code.
        message: human-readable text (never secrets, SQL or paths).
        extra: additional top-level JSON fields (e.g. ``retry_after_ms``, ``soft_logout``).
    """

    def __init__(
        self,
        http_status: int,
        errcode: Codes,
        message: str = "",
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message or errcode.value)
        self.http_status = http_status
        self.errcode = errcode
        self.message = message or errcode.value
        self.extra: dict[str, Any] = dict(extra or {})

    def to_json(self) -> dict[str, Any]:
        """Returns the JSON body of the error response."""
        body: dict[str, Any] = {"errcode": self.errcode.value, "error": self.message}
        body.update(self.extra)
        return body

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.http_status}, {self.errcode.value}, {self.message!r})"


class LocalProtocolError(Exception):
    """The caller used sc_proto wrongly (a programming error on this side, not a peer's fault)."""


class RemoteProtocolError(MatrixError):
    """A peer sent data that violates the protocol (bad JSON, bad identifiers, bad events).

    Defaults to 400 ``M_BAD_JSON``; subclasses and callers may choose another code.
    """

    def __init__(
        self,
        message: str,
        errcode: Codes = Codes.BAD_JSON,
        http_status: int = 400,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(http_status, errcode, message, extra)


class InvalidIdentifierError(RemoteProtocolError):
    """An identifier (user, room, event, device ID, alias, server name) is malformed."""

    def __init__(self, message: str, errcode: Codes = Codes.INVALID_PARAM) -> None:
        super().__init__(message, errcode)


class CanonicalJSONError(RemoteProtocolError):
    """A value cannot be encoded or decoded as (canonical) Matrix JSON."""

    def __init__(self, message: str, errcode: Codes = Codes.NOT_JSON) -> None:
        super().__init__(message, errcode)


class InvalidEventError(RemoteProtocolError):
    """An event is malformed: missing keys, wrong types, or too large."""

    def __init__(self, message: str, errcode: Codes = Codes.BAD_JSON, http_status: int = 400) -> None:
        super().__init__(message, errcode, http_status)


class SignatureError(RemoteProtocolError):
    """A signature is missing, malformed, or does not verify."""

    def __init__(self, message: str, errcode: Codes = Codes.FORBIDDEN, http_status: int = 401) -> None:
        super().__init__(message, errcode, http_status)


class AuthError(MatrixError):
    """An event was rejected by the authorization rules. ``reason`` says which rule."""

    def __init__(self, reason: str) -> None:
        super().__init__(403, Codes.FORBIDDEN, reason)
        self.reason = reason


class UnsupportedRoomVersionError(MatrixError):
    """A room version that sc_proto does not know."""

    def __init__(self, version: str) -> None:
        super().__init__(400, Codes.UNSUPPORTED_ROOM_VERSION, f"Unsupported room version: {version!r}")
        self.version = version
