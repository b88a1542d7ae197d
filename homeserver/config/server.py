"""The ``server:`` section: identity, listeners, public URL, data directory, signing key."""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse

import attrs

from homeserver.config._options import (
    BOOL,
    BYTE_SIZE,
    PATH,
    ParseContext,
    ValueType,
    fail,
    integer,
    list_of,
    option,
    optional,
    required_option,
    section_type,
)
from homeserver.config.errors import ConfigError
from sc_proto.identifiers import is_valid_server_name

_DNS_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_IPV4_LIKE_RE = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
_PORT_RE = re.compile(r"\d{1,5}")


def server_name_problem(name: str) -> str | None:
    """Checks a Matrix server name (appendices, "Server Name").

    Args:
        name: the candidate, e.g. ``example.org``, ``matrix.example.org:8448``, ``[::1]:8448``.

    Returns:
        ``None`` when valid, otherwise a short description of the problem.
    """
    if not name or len(name) > 255:
        return "a server name must be 1 to 255 characters"
    host, port = name, None
    if name.startswith("["):
        end = name.find("]")
        if end < 0:
            return "unterminated IPv6 literal"
        host, rest = name[: end + 1], name[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return "unexpected characters after the IPv6 literal"
            port = rest[1:]
    elif ":" in name:
        host, port = name.rsplit(":", 1)
    if port is not None:
        # NOTSPEC: the grammar allows any 1-5 digits; we also reject 0 and ports above 65535,
        # which no server can listen on.
        if not _PORT_RE.fullmatch(port) or not 0 < int(port) <= 65535:
            return "the port must be a number between 1 and 65535"
    problem = _host_problem(host)
    if problem is None and not is_valid_server_name(name):
        # Our checks are stricter than the grammar; this only guards against drift between the two.
        return "it does not match the server-name grammar (hostname[:port])"
    return problem


def _host_problem(host: str) -> str | None:
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return "invalid IPv6 literal"
        return None
    if _IPV4_LIKE_RE.fullmatch(host):
        if any(int(part) > 255 for part in host.split(".")):
            return "invalid IPv4 address"
        return None
    labels = host.split(".")
    if not all(_DNS_LABEL_RE.fullmatch(label) for label in labels):
        return "a DNS name must be dot-separated labels of letters, digits and inner hyphens"
    return None


def _parse_server_name(value: object, path: str, _ctx: ParseContext) -> str:
    if not isinstance(value, str):
        raise fail(path, "a server name such as 'example.org'", value)
    problem = server_name_problem(value)
    if problem:
        raise ConfigError(f"invalid server name {value!r}: {problem}", path)
    return value


SERVER_NAME = ValueType("a Matrix server name (host[:port])", _parse_server_name)


def _parse_ip(value: object, path: str, _ctx: ParseContext) -> str:
    name = "an IP address such as '127.0.0.1', '::' or '0.0.0.0'"
    if not isinstance(value, str):
        raise fail(path, name, value)
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise fail(path, name, value) from None


IP_ADDRESS = ValueType("an IP address", _parse_ip)


def _parse_base_url(value: object, path: str, _ctx: ParseContext) -> str:
    name = "an http:// or https:// URL such as 'https://matrix.example.org/'"
    if not isinstance(value, str):
        raise fail(path, name, value)
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018  # parses the port; raises ValueError when out of range
    except ValueError:
        raise fail(path, name, value) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise fail(path, name, value)
    if parts.username or parts.password:
        raise ConfigError("the public URL must not contain credentials", path)
    return value if value.endswith("/") else value + "/"


BASE_URL = ValueType("an http(s) URL", _parse_base_url)


@attrs.frozen
class ListenerConfig:
    """One HTTP listener (client and federation APIs share a listener)."""

    bind_address: str = option(
        "127.0.0.1", IP_ADDRESS, "IP address to listen on; '::' or '0.0.0.0' listens on every interface."
    )
    port: int = option(8008, integer(1, 65535), "TCP port to listen on.")
    tls: bool = option(
        False,
        BOOL,
        "Terminate TLS on this listener. Usually false, with a reverse proxy in front doing TLS.",
    )
    tls_certificate_path: str | None = option(
        None, optional(PATH), "PEM certificate chain; required when tls is true."
    )
    tls_private_key_path: str | None = option(
        None, optional(PATH), "PEM private key; required when tls is true."
    )
    x_forwarded: bool = option(
        False,
        BOOL,
        "Trust X-Forwarded-For/-Proto from the peer (only behind a reverse proxy you control); "
        "affects per-IP rate limits.",
    )

    def check(self, path: str) -> None:
        """Cross-option checks, called by the parser."""
        if self.tls and not (self.tls_certificate_path and self.tls_private_key_path):
            raise ConfigError(
                "tls is true, so tls_certificate_path and tls_private_key_path are required", path
            )


@attrs.frozen
class ServerConfig:
    """Identity and network settings of the homeserver."""

    server_name: str = required_option(
        SERVER_NAME,
        "The server name: the part after ':' in user IDs (@alice:example.org). It cannot be changed "
        "once users or rooms exist.",
    )
    listeners: tuple[ListenerConfig, ...] = option(
        (ListenerConfig(),),
        list_of(section_type(ListenerConfig)),
        "HTTP listeners; at least one.",
        default_doc="one listener on 127.0.0.1 port 8008 without TLS",
    )
    public_baseurl: str = option(
        "http://localhost:8008/",
        BASE_URL,
        "The URL clients use to reach this server (advertised in .well-known and links).",
    )
    data_dir: str = option(
        ".",
        PATH,
        "Directory for the signing key, the SQLite database and media. Relative paths are relative "
        "to the config file.",
        default_doc="the config file's directory",
        contextual=lambda ctx: ctx.data_dir,
    )
    signing_key_path: str = option(
        "signing.key",
        PATH,
        "The server's ed25519 signing key file ('ed25519 <version> <base64 seed>'). Keep it secret "
        "and backed up: losing it breaks federation with servers that cached the old key.",
        default_doc="DATA/signing.key",
        contextual=lambda ctx: os.path.join(ctx.data_dir, "signing.key"),
    )
    pid_file: str | None = option(None, optional(PATH), "Write the process id here at start (optional).")
    max_request_body_size: int = option(
        1024 * 1024,
        BYTE_SIZE,
        "Largest request body accepted on the client and federation APIs (media uploads use "
        "media.max_upload_size instead).",
    )
    serve_well_known: bool = option(
        False,
        BOOL,
        "Serve /.well-known/matrix/client and /.well-known/matrix/server from this server.",
    )

    def check(self, path: str) -> None:
        """Cross-option checks, called by the parser."""
        if not self.listeners:
            raise ConfigError("at least one listener is required", f"{path}.listeners")
        seen: set[tuple[str, int]] = set()
        for i, listener in enumerate(self.listeners):
            key = (listener.bind_address, listener.port)
            if key in seen:
                raise ConfigError(
                    f"duplicate listener {listener.bind_address} port {listener.port}",
                    f"{path}.listeners[{i}]",
                )
            seen.add(key)
