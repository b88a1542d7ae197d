"""Request-parameter parsers for Matrix identifiers: the one place servlets turn path segments and
body fields into user IDs, room IDs, aliases, event IDs and server names.

Each parser answers the spec's 400 (``M_INVALID_PARAM``) for a malformed value; the grammar itself
is :mod:`sc_proto.identifiers`, and "is it ours?" is :class:`homeserver.identity.LocalServer`.
Domain modules (``homeserver.rooms``, ``homeserver.e2ee``, ...) must not import the HTTP layer, so
they call :mod:`homeserver.identity` directly; these parsers delegate to the same functions, so
there is one rule either way.
"""

from __future__ import annotations

from homeserver.identity import (
    LocalServer,
    require_event_id,
    require_room_alias,
    require_room_id,
    require_user_id,
)
from sc_proto.errors import Codes, InvalidIdentifierError, MatrixError
from sc_proto.identifiers import RoomAlias, RoomID, ServerName, UserID
from sc_proto.room_versions import RoomVersion

__all__ = [
    "parse_event_id",
    "parse_local_path_user_id",
    "parse_path_user_id",
    "parse_room_alias",
    "parse_room_id",
    "parse_room_id_or_alias",
    "parse_server_name",
    "parse_user_id",
]


def parse_user_id(value: object, what: str = "user_id") -> UserID:
    """A user ID from a request body or query (historical localparts allowed).

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` when malformed.
    """
    return require_user_id(value, what)


def parse_path_user_id(value: str) -> UserID:
    """The ``{userId}`` path parameter.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` when it is not a user ID.
    """
    try:
        return UserID.parse(value, historical=True)
    except InvalidIdentifierError:
        raise MatrixError(400, Codes.INVALID_PARAM, "Invalid user ID") from None


def parse_local_path_user_id(value: str, local: LocalServer) -> UserID:
    """The ``{userId}`` path parameter of an endpoint that only serves our own users (admin APIs).

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` when malformed or another server's (Synapse's wording).
    """
    parsed = parse_path_user_id(value)
    if not local.is_mine(parsed):
        raise MatrixError(400, Codes.INVALID_PARAM, "This endpoint can only be used with local users")
    return parsed


def parse_room_id(value: object, what: str = "room_id") -> str:
    """A room ID (``!opaque:server`` or a v12 ``!hash``) from a path segment or body field, as text.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` when malformed.
    """
    return str(require_room_id(value, what))


def parse_room_alias(value: object, what: str = "room_alias") -> RoomAlias:
    """A room alias (``#name:server``).

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` when malformed.
    """
    return require_room_alias(value, what)


def parse_room_id_or_alias(value: object, what: str = "roomIdOrAlias") -> RoomID | RoomAlias:
    """A ``{roomIdOrAlias}`` path parameter (join, knock): a room ID or an alias by its sigil.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` when it is neither.
    """
    if isinstance(value, str) and value.startswith("#"):
        return require_room_alias(value, what)
    return require_room_id(value, what)


def parse_event_id(value: object, what: str = "event_id", room_version: RoomVersion | None = None) -> str:
    """An event ID (:func:`homeserver.identity.is_event_id`); with ``room_version`` it must have that version's form.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` when malformed.
    """
    return require_event_id(value, what, room_version)


def parse_server_name(value: object, what: str = "server") -> ServerName:
    """A server name (``example.org``, ``localhost:8448``, ``[::1]:8448``) from a query parameter.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` when malformed.
    """
    try:
        return ServerName.parse(value)
    except InvalidIdentifierError:
        raise MatrixError(400, Codes.INVALID_PARAM, f"'{what}' is not a valid server name") from None
