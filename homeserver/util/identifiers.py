"""Identifier validation shared by the domain and the HTTP layer (400 errors from ``sc_proto`` parsing).

These raise :class:`~sc_proto.errors.MatrixError` so a domain service can validate identifiers it
receives without importing the HTTP layer (``homeserver.http.servlet`` re-exports them for servlets).
"""

from __future__ import annotations

from sc_proto.errors import Codes, InvalidIdentifierError, MatrixError
from sc_proto.identifiers import RoomID

__all__ = ["parse_room_id"]


def parse_room_id(value: object) -> str:
    """Validates a room ID from a request (path segment or body field).

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` when malformed.
    """
    try:
        return str(RoomID.parse(value))
    except InvalidIdentifierError:
        raise MatrixError(400, Codes.INVALID_PARAM, "Invalid room ID") from None
