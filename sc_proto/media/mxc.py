"""Matrix content URIs, ``mxc://<server-name>/<media-id>`` (C-S API, "Matrix Content URIs").

The spec makes homeservers sanitise these against path traversal: the server name must be a valid
server name and the media ID may only hold ``A-Z a-z 0-9 _ -``. :class:`MXCUri` enforces both on
construction, so any held instance is safe to use in paths and URLs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sc_proto.errors import InvalidIdentifierError
from sc_proto.identifiers import ServerName, parse_server_name

__all__ = ["MAX_MEDIA_ID_LENGTH", "MXC_SCHEME", "MXCUri", "parse_mxc"]

MXC_SCHEME = "mxc://"
"""The scheme prefix, matched case-sensitively."""

MAX_MEDIA_ID_LENGTH = 255
"""Longest media ID accepted (NOTSPEC: the spec sets no limit; storage wants one)."""

_MEDIA_ID_RE = re.compile(r"[A-Za-z0-9_\-]+")


def _show(value: object) -> str:
    if isinstance(value, str):
        return repr(value[:80]) + ("..." if len(value) > 80 else "")
    return f"a {type(value).__name__}"


@dataclass(frozen=True)
class MXCUri:
    """A validated ``mxc://`` URI.

    Attributes:
        server_name: the origin homeserver's server name, as written.
        media_id: the opaque media ID (``[A-Za-z0-9_-]+``).
    """

    server_name: str
    media_id: str

    def __post_init__(self) -> None:
        parse_server_name(self.server_name)
        if not isinstance(self.media_id, str):
            raise InvalidIdentifierError(f"media ID must be a string, not {_show(self.media_id)}")
        if len(self.media_id) > MAX_MEDIA_ID_LENGTH:
            raise InvalidIdentifierError(f"media ID is longer than {MAX_MEDIA_ID_LENGTH} characters")
        if not _MEDIA_ID_RE.fullmatch(self.media_id):
            raise InvalidIdentifierError(
                f"media ID may only contain A-Z, a-z, 0-9, '_' and '-': {_show(self.media_id)}"
            )

    @classmethod
    def parse(cls, uri: object) -> MXCUri:
        """Parses ``mxc://<server-name>/<media-id>``; see :func:`parse_mxc`."""
        return parse_mxc(uri)

    @property
    def server(self) -> ServerName:
        """The server name as a :class:`~sc_proto.identifiers.ServerName`."""
        return ServerName.parse(self.server_name)

    def __str__(self) -> str:
        return f"{MXC_SCHEME}{self.server_name}/{self.media_id}"


def parse_mxc(uri: object) -> MXCUri:
    """Parses and validates an ``mxc://`` URI.

    Args:
        uri: e.g. ``mxc://example.org/abc123``.

    Returns:
        The :class:`MXCUri`.

    Raises:
        InvalidIdentifierError: not a string, wrong scheme, missing parts, an invalid server
            name or a media ID with characters outside ``[A-Za-z0-9_-]`` (this includes any
            further ``/``, query or fragment).
    """
    if not isinstance(uri, str):
        raise InvalidIdentifierError(f"mxc URI must be a string, not {_show(uri)}")
    if not uri.startswith(MXC_SCHEME):
        raise InvalidIdentifierError(f"not an mxc:// URI: {_show(uri)}")
    server_name, slash, media_id = uri[len(MXC_SCHEME) :].partition("/")
    if not slash:
        raise InvalidIdentifierError(f"mxc URI has no media ID: {_show(uri)}")
    return MXCUri(server_name, media_id)
