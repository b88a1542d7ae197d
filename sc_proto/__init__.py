"""sc_proto: a sans-I/O Matrix protocol library.

Identifiers, canonical JSON, room versions, events (hashes, IDs, redaction), signing, authorization
rules and state resolution, as pure functions over bytes, dicts and frozen objects. No sockets, no
database, no clock reads: hosts (a homeserver, a bot, a test) supply I/O and time.
"""

from sc_proto._version import __version__
from sc_proto.errors import (
    AuthError,
    CanonicalJSONError,
    Codes,
    InvalidEventError,
    InvalidIdentifierError,
    LocalProtocolError,
    MatrixError,
    RemoteProtocolError,
    SignatureError,
    UnsupportedRoomVersionError,
)
from sc_proto.events.model import Event, StateKey
from sc_proto.json import encode_canonical_json
from sc_proto.room_versions import (
    DEFAULT_ROOM_VERSION,
    KNOWN_ROOM_VERSIONS,
    EventFormat,
    RoomVersion,
    RoomVersions,
    StateResAlgorithm,
    get_room_version,
)

__all__ = [
    "DEFAULT_ROOM_VERSION",
    "KNOWN_ROOM_VERSIONS",
    "AuthError",
    "CanonicalJSONError",
    "Codes",
    "Event",
    "EventFormat",
    "InvalidEventError",
    "InvalidIdentifierError",
    "LocalProtocolError",
    "MatrixError",
    "RemoteProtocolError",
    "RoomVersion",
    "RoomVersions",
    "SignatureError",
    "StateKey",
    "StateResAlgorithm",
    "UnsupportedRoomVersionError",
    "__version__",
    "encode_canonical_json",
    "get_room_version",
]
