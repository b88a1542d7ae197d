"""The local server's identity: which identifiers are ours, and how ours are built.

Every "is this user (alias, room, server) ours?" question and every locally minted user ID, room
alias or legacy room ID goes through one :class:`LocalServer`, built once by the composition root
from ``server.server_name``. Identifiers are parsed with :mod:`sc_proto.identifiers`, never split by
hand: ``@bob:localhost:8448`` belongs to ``localhost:8448`` and ``@bob:[::1]:8448`` to ``[::1]:8448``.

Server names compare as written (the spec makes them case-sensitive), so ``Example.org`` is not
``example.org``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sc_proto.errors import Codes, InvalidIdentifierError, MatrixError
from sc_proto.identifiers import MAX_IDENTIFIER_BYTES, EventID, RoomAlias, RoomID, ServerName, UserID
from sc_proto.room_versions import RoomVersion

__all__ = [
    "LocalServer",
    "domain_of",
    "is_event_id",
    "require_event_id",
    "require_room_alias",
    "require_room_id",
    "require_user_id",
]


def domain_of(identifier: str) -> str | None:
    """The server name of a user ID, room alias, room ID or event ID (None when it has none or is malformed).

    Historical user-ID localparts are accepted (they exist in rooms); v12 room IDs and v3+ event IDs
    carry no domain and give None.
    """
    try:
        if identifier.startswith("@"):
            return UserID.parse(identifier, historical=True).domain
        if identifier.startswith("#"):
            return RoomAlias.parse(identifier).domain
        if identifier.startswith("!"):
            return RoomID.parse(identifier).domain
        if identifier.startswith("$"):
            return EventID.parse(identifier).domain
    except InvalidIdentifierError:
        return None
    return None


def _invalid(what: str, kind: str) -> MatrixError:
    return MatrixError(400, Codes.INVALID_PARAM, f"'{what}' is not a valid {kind}")


def require_user_id(value: object, what: str = "user_id") -> UserID:
    """Parses a user ID from a request (historical localparts allowed: such users exist in rooms).

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` when malformed.
    """
    try:
        return UserID.parse(value, historical=True)
    except InvalidIdentifierError:
        raise _invalid(what, "user ID") from None


def require_room_id(value: object, what: str = "room_id") -> RoomID:
    """Parses a room ID (either form) from a request.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` when malformed.
    """
    try:
        return RoomID.parse(value)
    except InvalidIdentifierError:
        raise _invalid(what, "room ID") from None


def require_room_alias(value: object, what: str = "room_alias") -> RoomAlias:
    """Parses a room alias from a request.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` when malformed.
    """
    try:
        return RoomAlias.parse(value)
    except InvalidIdentifierError:
        raise _invalid(what, "room alias") from None


def is_event_id(value: object, room_version: RoomVersion | None = None) -> bool:
    """The one event-ID rule.

    With the room's version, the ID must have that version's form (:meth:`EventID.parse`: a
    ``$opaque:server`` ID in v1-2, a 43-character reference hash in v3+). Without it (a path
    segment or a relation naming an event we may not have), an event ID is opaque to us as to
    clients: ``$`` and at most 255 bytes, so an unknown event is a 404, not a 400.
    """
    if room_version is not None:
        try:
            EventID.parse(value, room_version=room_version)
        except InvalidIdentifierError:
            return False
        return True
    return (
        isinstance(value, str)
        and len(value) > 1
        and value.startswith("$")
        and len(value.encode("utf-8", "surrogatepass")) <= MAX_IDENTIFIER_BYTES
    )


def require_event_id(value: object, what: str = "event_id", room_version: RoomVersion | None = None) -> str:
    """An event ID from a request, checked by :func:`is_event_id`.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` when malformed.
    """
    if not is_event_id(value, room_version):
        raise _invalid(what, "event ID")
    assert isinstance(value, str)
    return value


@dataclass(frozen=True)
class LocalServer:
    """Our server name and the identifiers that belong to it.

    Args:
        name: our server name as configured (``example.org``, ``localhost:8448``, ``[::1]:8448``).
    """

    name: str

    def __post_init__(self) -> None:
        ServerName.parse(self.name)  # raises InvalidIdentifierError for a malformed name

    @property
    def server_name(self) -> ServerName:
        """Our name, parsed."""
        return ServerName.parse(self.name)

    # ------------------------------------------------------------------ is it ours?

    def is_mine_server(self, server_name: str | ServerName | None) -> bool:
        """Whether ``server_name`` is our own name (as written)."""
        return server_name is not None and str(server_name) == self.name

    def is_mine(self, identifier: str | UserID | RoomAlias | RoomID) -> bool:
        """Whether a user ID, room alias or (domain-bearing) room ID belongs to this server.

        Malformed identifiers are never ours; v12 room IDs have no domain and are never "ours" by
        their form (ask the room store whether we know the room).
        """
        if isinstance(identifier, (UserID, RoomAlias)):
            return identifier.domain == self.name
        if isinstance(identifier, RoomID):
            return identifier.domain == self.name
        return domain_of(identifier) == self.name

    # ------------------------------------------------------------------ building ours

    def user_id(self, localpart: str) -> str:
        """``@localpart:ourname`` (the localpart must fit the current user-ID grammar).

        Raises:
            InvalidIdentifierError: the localpart is not a valid user-ID localpart or the ID is too long.
        """
        return str(UserID.parse(f"@{localpart}:{self.name}"))

    def alias(self, localpart: str) -> str:
        """``#localpart:ourname``.

        Raises:
            InvalidIdentifierError: the localpart is empty, holds ``:`` or the alias is too long.
        """
        return str(RoomAlias(localpart, self.name))

    def new_legacy_room_id(self) -> str:
        """A fresh ``!opaque:ourname`` room ID for room versions 1-11."""
        return str(RoomID(secrets.token_urlsafe(18), self.name))

    # ------------------------------------------------------------------ request helpers

    def qualify(self, user: str) -> str:
        """A bare localpart as ``@localpart:ourname``; anything starting with ``@`` unchanged (not validated)."""
        return user if user.startswith("@") else f"@{user}:{self.name}"

    def local_user(self, value: object, what: str = "user_id") -> UserID:
        """Parses a user ID from a request or the CLI and requires it to be ours.

        Accepts a bare localpart too (``alice`` means ``@alice:ourname``).

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` when malformed, 400 ``M_INVALID_PARAM`` when the
                user belongs to another server.
        """
        if isinstance(value, str):
            value = self.qualify(value)
        try:
            user = UserID.parse(value, historical=True)
        except InvalidIdentifierError:
            raise MatrixError(400, Codes.INVALID_PARAM, f"'{what}' is not a valid user ID") from None
        if user.domain != self.name:
            raise MatrixError(400, Codes.INVALID_PARAM, f"'{what}' is not a user of this server")
        return user
