"""Matrix identifiers (spec appendices, "Identifier Grammar").

Server names, user IDs (current and historical grammar), room IDs (with a domain, or the
domain-less hash form of room version 12), event IDs (with a domain in room versions 1-2, a
reference hash afterwards), room aliases and device IDs.

Every identifier type is a frozen dataclass whose constructor validates, so holding one means it
is well formed; ``parse`` builds one from its string and ``str()`` gives the string back exactly.
Server names are case-sensitive and kept as written. Failures raise
:class:`~sc_proto.errors.InvalidIdentifierError` (``M_INVALID_PARAM``); non-string input is
reported the same way, because identifiers usually come straight out of a peer's JSON.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from sc_proto.errors import InvalidIdentifierError
from sc_proto.room_versions import EventFormat, RoomVersion

__all__ = [
    "MAX_DEVICE_ID_LENGTH",
    "MAX_IDENTIFIER_BYTES",
    "DeviceID",
    "EventID",
    "RoomAlias",
    "RoomID",
    "ServerName",
    "UserID",
    "is_valid_server_name",
    "is_valid_user_localpart",
    "parse_server_name",
    "validate_device_id",
]

MAX_IDENTIFIER_BYTES = 255
"""Longest user ID, room ID, event ID or room alias, in UTF-8 bytes, sigil and domain included."""

MAX_DEVICE_ID_LENGTH = 255
"""Longest device ID accepted (NOTSPEC: the spec sets no limit; storage and logs want one)."""

_USER_LOCALPART_RE = re.compile(r"[a-z0-9._=\-/+]+")
_DNS_NAME_RE = re.compile(r"[A-Za-z0-9.\-]{1,255}")
_IPV4_RE = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})")
_IPV6_CHARS_RE = re.compile(r"[0-9A-Fa-f:.]{2,45}")
# NOTSPEC: the grammar allows leading zeros and port 0; we refuse both, since "host:08448" names
# the same server as "host:8448" but is a different string, and port 0 is not a TCP port.
_PORT_RE = re.compile(r"[1-9][0-9]{0,4}")
_MAX_PORT = 65535
# Reference hashes are SHA-256: 32 bytes are 43 characters of unpadded base64.
_URL_SAFE_HASH_RE = re.compile(r"[A-Za-z0-9_\-]{43}")
_STANDARD_HASH_RE = re.compile(r"[A-Za-z0-9+/]{43}")
# Characters that no localpart of any grammar may hold: ':' (the separator), NUL and surrogates.
_FORBIDDEN_IN_LOCALPART_RE = re.compile("[:\x00\ud800-\udfff]")
# RFC 6749 section 3.3 scope-token characters, which the spec requires of device IDs.
_DEVICE_ID_RE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_MAX_SHOWN = 64


def _show(value: object) -> str:
    """A short printable rendering of a bad value for error messages."""
    if isinstance(value, str):
        return repr(value[:_MAX_SHOWN]) + ("..." if len(value) > _MAX_SHOWN else "")
    return f"a {type(value).__name__}"


def _require_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidIdentifierError(f"{what} must be a string, not {_show(value)}")
    return value


def _check_length(identifier: str, what: str) -> None:
    # A character is at most 4 UTF-8 bytes, so short strings need no encoding. Surrogates have
    # been refused before this point, so encoding cannot fail.
    if len(identifier) * 4 > MAX_IDENTIFIER_BYTES and (
        len(identifier.encode("utf-8")) > MAX_IDENTIFIER_BYTES
    ):
        raise InvalidIdentifierError(f"{what} is longer than {MAX_IDENTIFIER_BYTES} bytes")


def _check_opaque_localpart(localpart: str, what: str, *, allow_empty: bool) -> None:
    if not localpart and not allow_empty:
        raise InvalidIdentifierError(f"{what} has an empty localpart")
    if _FORBIDDEN_IN_LOCALPART_RE.search(localpart):
        raise InvalidIdentifierError(f"{what} localpart contains ':', NUL or a lone surrogate")


def _split_sigil(value: object, sigil: str, what: str) -> tuple[str, str | None]:
    """Splits ``&localpart[:domain]`` at the first ``:`` into (localpart, domain or None)."""
    text = _require_str(value, what)
    if not text.startswith(sigil):
        raise InvalidIdentifierError(f"{what} must start with {sigil!r}: {_show(text)}")
    localpart, colon, domain = text[1:].partition(":")
    return localpart, (domain if colon else None)


# --------------------------------------------------------------------------------------------
# Server names


def _check_host(host: str) -> None:
    """Validates the hostname part of a server name (IPv6 literals in brackets)."""
    if host.startswith("["):
        inner = host[1:-1] if host.endswith("]") else ""
        if not _IPV6_CHARS_RE.fullmatch(inner):
            raise InvalidIdentifierError(f"invalid IPv6 literal in server name: {_show(host)}")
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise InvalidIdentifierError(f"invalid IPv6 literal in server name: {_show(host)}") from None
        return
    ipv4 = _IPV4_RE.fullmatch(host)
    if ipv4 is not None:
        if any(int(octet) > 255 for octet in ipv4.groups()):
            raise InvalidIdentifierError(f"invalid IPv4 literal in server name: {_show(host)}")
        return
    # Only the grammar's characters are required: well-formed labels (none empty, no leading
    # hyphen) are a SHOULD, and refusing them would split rooms with lenient servers.
    if not _DNS_NAME_RE.fullmatch(host):
        raise InvalidIdentifierError(f"invalid hostname in server name: {_show(host)}")


def _parse_port(port: str, server_name: str) -> int:
    if not _PORT_RE.fullmatch(port) or int(port) > _MAX_PORT:
        raise InvalidIdentifierError(f"invalid port in server name: {_show(server_name)}")
    return int(port)


def parse_server_name(server_name: object) -> tuple[str, int | None]:
    """Splits a server name into hostname and port, validating both.

    Args:
        server_name: e.g. ``matrix.org``, ``1.2.3.4:1234``, ``[1234:5678::abcd]:5678``.

    Returns:
        ``(host, port)``; an IPv6 host keeps its brackets; ``port`` is ``None`` when absent.

    Raises:
        InvalidIdentifierError: the server name does not match the spec's grammar.
    """
    text = _require_str(server_name, "server name")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise InvalidIdentifierError(f"unterminated IPv6 literal: {_show(text)}")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise InvalidIdentifierError(f"invalid server name: {_show(text)}")
        port_text: str | None = rest[1:] if rest else None
    else:
        host, colon, port_part = text.partition(":")
        port_text = port_part if colon else None
    _check_host(host)
    return host, None if port_text is None else _parse_port(port_text, text)


def is_valid_server_name(server_name: object) -> bool:
    """Returns whether ``server_name`` matches the spec's server-name grammar."""
    try:
        parse_server_name(server_name)
    except InvalidIdentifierError:
        return False
    return True


@dataclass(frozen=True)
class ServerName:
    """A homeserver's name: hostname (DNS name, IPv4 literal or bracketed IPv6) and optional port.

    Attributes:
        host: as written; IPv6 literals keep their brackets (``[::1]``).
        port: the explicit port, or ``None``.
    """

    host: str
    port: int | None = None

    def __post_init__(self) -> None:
        _check_host(_require_str(self.host, "server name host"))
        if self.port is not None and (
            not isinstance(self.port, int) or isinstance(self.port, bool) or not 1 <= self.port <= _MAX_PORT
        ):
            raise InvalidIdentifierError(f"invalid port: {self.port!r}")

    @classmethod
    def parse(cls, server_name: object) -> ServerName:
        """Parses a server name string.

        Raises:
            InvalidIdentifierError: ``server_name`` is malformed.
        """
        host, port = parse_server_name(server_name)
        return cls(host, port)

    @property
    def is_ip_literal(self) -> bool:
        """Whether the host is an IPv4 or IPv6 address literal rather than a DNS name."""
        return self.host.startswith("[") or _IPV4_RE.fullmatch(self.host) is not None

    @property
    def bare_host(self) -> str:
        """The host without IPv6 brackets, as a resolver or socket wants it."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    def __str__(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


# --------------------------------------------------------------------------------------------
# User IDs


def is_valid_user_localpart(localpart: object) -> bool:
    """Returns whether ``localpart`` fits the current user-ID grammar (``[a-z0-9._=\\-/+]+``)."""
    return isinstance(localpart, str) and _USER_LOCALPART_RE.fullmatch(localpart) is not None


@dataclass(frozen=True)
class UserID:
    """A user ID, ``@localpart:domain``.

    The constructor accepts the historical grammar (any localpart without ``:``, NUL or
    surrogates, even empty), since such IDs exist in rooms; use :meth:`parse` with
    ``historical=False`` (the default) or :func:`is_valid_user_localpart` for new users.
    """

    localpart: str
    domain: str

    def __post_init__(self) -> None:
        _require_str(self.localpart, "user ID localpart")
        _check_opaque_localpart(self.localpart, "user ID", allow_empty=True)
        parse_server_name(self.domain)
        _check_length(str(self), "user ID")

    @classmethod
    def parse(cls, user_id: object, *, historical: bool = False) -> UserID:
        """Parses ``@localpart:domain``.

        Args:
            user_id: the string.
            historical: accept the historical localpart grammar (for IDs seen over federation
                or in room history); otherwise the localpart must match ``[a-z0-9._=\\-/+]+``.

        Raises:
            InvalidIdentifierError: the user ID is malformed or longer than 255 bytes.
        """
        localpart, domain = _split_sigil(user_id, "@", "user ID")
        if domain is None:
            raise InvalidIdentifierError(f"user ID has no domain: {_show(user_id)}")
        if not historical and not _USER_LOCALPART_RE.fullmatch(localpart):
            raise InvalidIdentifierError(
                f"user ID localpart may only contain a-z, 0-9, '._=-/+': {_show(user_id)}"
            )
        return cls(localpart, domain)

    @property
    def is_historical(self) -> bool:
        """Whether the localpart falls outside the current grammar (a non-compliant user ID)."""
        return _USER_LOCALPART_RE.fullmatch(self.localpart) is None

    @property
    def server_name(self) -> ServerName:
        """The domain as a :class:`ServerName`."""
        return ServerName.parse(self.domain)

    def __str__(self) -> str:
        return f"@{self.localpart}:{self.domain}"


# --------------------------------------------------------------------------------------------
# Room IDs and event IDs


def _check_domain_form(opaque_id: str, domain: str, what: str) -> None:
    _require_str(opaque_id, f"{what} opaque part")
    _check_opaque_localpart(opaque_id, what, allow_empty=False)
    parse_server_name(domain)


@dataclass(frozen=True)
class RoomID:
    """A room ID: ``!opaque_id:domain`` (room versions 1-11) or ``!hash`` (room version 12).

    In the domain-less form ``opaque_id`` is the create event's reference hash in URL-safe
    unpadded base64 and ``domain`` is ``None``.
    """

    opaque_id: str
    domain: str | None = None

    def __post_init__(self) -> None:
        if self.domain is None:
            text = _require_str(self.opaque_id, "room ID")
            if not _URL_SAFE_HASH_RE.fullmatch(text):
                raise InvalidIdentifierError(
                    f"room ID without a domain must be a 43-character hash: {_show(str(self))}"
                )
            return
        _check_domain_form(self.opaque_id, self.domain, "room ID")
        _check_length(str(self), "room ID")

    @classmethod
    def parse(cls, room_id: object, *, room_version: RoomVersion | None = None) -> RoomID:
        """Parses a room ID.

        Args:
            room_id: the string.
            room_version: when given, also require the form this room version uses (a domain
                in versions 1-11, none in version 12).

        Raises:
            InvalidIdentifierError: the room ID is malformed.
        """
        opaque_id, domain = _split_sigil(room_id, "!", "room ID")
        if room_version is not None:
            if room_version.room_id_from_create_event and domain is not None:
                raise InvalidIdentifierError(
                    f"room IDs in room version {room_version.identifier} have no domain"
                )
            if not room_version.room_id_from_create_event and domain is None:
                raise InvalidIdentifierError(
                    f"room IDs in room version {room_version.identifier} need a domain"
                )
        return cls(opaque_id, domain)

    def __str__(self) -> str:
        if self.domain is None:
            return f"!{self.opaque_id}"
        return f"!{self.opaque_id}:{self.domain}"


@dataclass(frozen=True)
class EventID:
    """An event ID: ``$opaque_id:domain`` (room versions 1-2) or ``$hash`` (versions 3+).

    In the hash form ``opaque_id`` is the 43-character unpadded base64 reference hash (standard
    alphabet in room version 3, URL-safe from version 4) and ``domain`` is ``None``.
    """

    opaque_id: str
    domain: str | None = None

    def __post_init__(self) -> None:
        if self.domain is None:
            text = _require_str(self.opaque_id, "event ID")
            if not (_URL_SAFE_HASH_RE.fullmatch(text) or _STANDARD_HASH_RE.fullmatch(text)):
                raise InvalidIdentifierError(
                    f"event ID without a domain must be a 43-character hash: {_show(str(self))}"
                )
            return
        _check_domain_form(self.opaque_id, self.domain, "event ID")
        _check_length(str(self), "event ID")

    @classmethod
    def parse(cls, event_id: object, *, room_version: RoomVersion | None = None) -> EventID:
        """Parses an event ID.

        Args:
            event_id: the string.
            room_version: when given, also require the form and base64 alphabet of this room
                version.

        Raises:
            InvalidIdentifierError: the event ID is malformed.
        """
        opaque_id, domain = _split_sigil(event_id, "$", "event ID")
        parsed = cls(opaque_id, domain)
        if room_version is not None:
            _check_event_id_form(parsed, room_version)
        return parsed

    def __str__(self) -> str:
        if self.domain is None:
            return f"${self.opaque_id}"
        return f"${self.opaque_id}:{self.domain}"


def _check_event_id_form(event_id: EventID, room_version: RoomVersion) -> None:
    fmt = room_version.event_format
    version = room_version.identifier
    if fmt is EventFormat.V1:
        if event_id.domain is None:
            raise InvalidIdentifierError(f"event IDs in room version {version} need a domain")
        return
    if event_id.domain is not None:
        raise InvalidIdentifierError(f"event IDs in room version {version} have no domain")
    pattern = _STANDARD_HASH_RE if fmt is EventFormat.V2 else _URL_SAFE_HASH_RE
    if not pattern.fullmatch(event_id.opaque_id):
        raise InvalidIdentifierError(f"event ID uses the wrong base64 alphabet for room version {version}")


# --------------------------------------------------------------------------------------------
# Room aliases and device IDs


@dataclass(frozen=True)
class RoomAlias:
    """A room alias, ``#localpart:domain``.

    The localpart may hold any code point but ``:``, NUL and surrogates; it must not be empty
    (the spec is silent on empty aliases; none can be meant).
    """

    localpart: str
    domain: str

    def __post_init__(self) -> None:
        _check_domain_form(self.localpart, self.domain, "room alias")
        _check_length(str(self), "room alias")

    @classmethod
    def parse(cls, alias: object) -> RoomAlias:
        """Parses ``#localpart:domain``.

        Raises:
            InvalidIdentifierError: the alias is malformed or longer than 255 bytes.
        """
        localpart, domain = _split_sigil(alias, "#", "room alias")
        if domain is None:
            raise InvalidIdentifierError(f"room alias has no domain: {_show(alias)}")
        return cls(localpart, domain)

    def __str__(self) -> str:
        return f"#{self.localpart}:{self.domain}"


def validate_device_id(device_id: object, *, strict: bool = True) -> str:
    """Checks a device ID and returns it.

    Args:
        device_id: the candidate.
        strict: require the RFC 6749 scope-token characters the spec mandates for device IDs
            (printable ASCII except space, ``"`` and ``\\``). With ``False`` (for IDs created by
            other servers), any characters but NUL and surrogates are accepted.

    Returns:
        ``device_id``, unchanged.

    Raises:
        InvalidIdentifierError: empty, longer than 255 characters, or with forbidden characters.
    """
    text = _require_str(device_id, "device ID")
    if not text:
        raise InvalidIdentifierError("device ID is empty")
    if len(text) > MAX_DEVICE_ID_LENGTH:
        raise InvalidIdentifierError(f"device ID is longer than {MAX_DEVICE_ID_LENGTH} characters")
    if strict:
        if not _DEVICE_ID_RE.fullmatch(text):
            raise InvalidIdentifierError(f"device ID contains forbidden characters: {_show(text)}")
    elif "\x00" in text or re.search("[\ud800-\udfff]", text):
        raise InvalidIdentifierError("device ID contains NUL or a lone surrogate")
    return text


@dataclass(frozen=True)
class DeviceID:
    """A device ID (validated with the strict grammar of :func:`validate_device_id`)."""

    value: str

    def __post_init__(self) -> None:
        validate_device_id(self.value)

    @classmethod
    def parse(cls, device_id: object) -> DeviceID:
        """Validates ``device_id`` and wraps it.

        Raises:
            InvalidIdentifierError: see :func:`validate_device_id`.
        """
        return cls(validate_device_id(device_id))

    def __str__(self) -> str:
        return self.value
