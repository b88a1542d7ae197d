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
from sc_proto.identifiers import RoomAlias, RoomID, ServerName, UserID

__all__ = ["LocalServer", "domain_of"]


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
            from sc_proto.identifiers import EventID

            return EventID.parse(identifier).domain
    except InvalidIdentifierError:
        return None
    return None


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

    def local_user(self, value: object, what: str = "user_id") -> UserID:
        """Parses a user ID from a request or the CLI and requires it to be ours.

        Accepts a bare localpart too (``alice`` means ``@alice:ourname``).

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` when malformed, 400 ``M_INVALID_PARAM`` when the
                user belongs to another server.
        """
        if isinstance(value, str) and not value.startswith("@"):
            value = f"@{value}:{self.name}"
        try:
            user = UserID.parse(value, historical=True)
        except InvalidIdentifierError:
            raise MatrixError(400, Codes.INVALID_PARAM, f"'{what}' is not a valid user ID") from None
        if user.domain != self.name:
            raise MatrixError(400, Codes.INVALID_PARAM, f"'{what}' is not a user of this server")
        return user
