"""Sync tokens: versioned, named stream positions (DESIGN.md 2.7).

A token looks like ``sc1_e42_ad7``: a version tag, then ``<name><position>`` pairs. Names are lower-case
letters, positions decimal integers. Decoding ignores names it does not know, and a name missing from a
token means "now" for that stream (the stream did not exist when the token was minted), so streams can
be added or retired without invalidating the tokens clients hold.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sc_proto.errors import Codes, MatrixError

TOKEN_VERSION = "sc1"  # noqa: S105 - a format tag, not a secret
_PAIR_RE = re.compile(r"([a-z]+)(\d{1,19})")


@dataclass(frozen=True)
class StreamToken:
    """Positions in named streams. Compare with :meth:`is_after`."""

    positions: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", MappingProxyType(dict(self.positions)))

    def get(self, name: str, default: int = 0) -> int:
        return self.positions.get(name, default)

    def with_position(self, name: str, position: int) -> StreamToken:
        return StreamToken({**self.positions, name: position})

    def merge_max(self, other: StreamToken) -> StreamToken:
        names = set(self.positions) | set(other.positions)
        return StreamToken({n: max(self.get(n), other.get(n)) for n in names})

    def encode(self) -> str:
        pairs = "_".join(f"{name}{pos}" for name, pos in sorted(self.positions.items()))
        return f"{TOKEN_VERSION}_{pairs}" if pairs else TOKEN_VERSION

    @classmethod
    def decode(cls, token: str, now: StreamToken, known: frozenset[str] | None = None) -> StreamToken:
        """Parses a token; streams it does not name take their position from ``now``.

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` for a malformed token.
        """
        parts = token.split("_") if isinstance(token, str) else []
        if not parts or parts[0] != TOKEN_VERSION or len(token) > 512:
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid stream token")
        positions = dict(now.positions)
        for part in parts[1:]:
            match = _PAIR_RE.fullmatch(part)
            if match is None:
                raise MatrixError(400, Codes.INVALID_PARAM, "Invalid stream token")
            name, pos = match.group(1), int(match.group(2))
            if known is None or name in known:
                positions[name] = pos
        return cls(positions)

    def __str__(self) -> str:
        return self.encode()


@dataclass(frozen=True, order=True)
class RoomPosition:
    """A position in a room's timeline, just after the event with key ``(depth, stream)``.

    Encoded ``t<depth>-<stream>`` (topological). A live stream token's events position ``s<stream>`` is
    also accepted where the spec allows sync tokens (``/messages`` ``from``); it is resolved by the
    caller to a topological position.
    """

    depth: int
    stream: int

    def encode(self) -> str:
        return f"t{self.depth}-{self.stream}"

    @classmethod
    def decode(cls, token: str) -> RoomPosition:
        match = re.fullmatch(r"t(-?\d{1,19})-(-?\d{1,19})", token) if isinstance(token, str) else None
        if match is None:
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid pagination token")
        return cls(int(match.group(1)), int(match.group(2)))
