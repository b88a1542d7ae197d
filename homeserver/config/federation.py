"""The ``federation:`` section: talking to other homeservers (Server-Server API, issue 13).

Outbound requests never reach the local network unless allowed: ``ip_range_blacklist`` (private,
loopback, link-local, multicast and reserved ranges by default) is checked on every resolved address,
``ip_range_whitelist`` punches holes in it (test setups: ``127.0.0.0/8``). Certificates of remote
servers are verified unless ``verify_certificates`` is false (self-signed test setups only).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import attrs

from homeserver.config._options import (
    BOOL,
    BYTE_SIZE,
    ParseContext,
    ValueType,
    fail,
    integer,
    list_of,
    option,
    optional,
    required_option,
    section_type,
    str_mapping,
    string,
)

DEFAULT_IP_RANGE_BLACKLIST = (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "192.0.0.0/24",
    "169.254.0.0/16", "192.88.99.0/24", "198.18.0.0/15", "192.0.2.0/24", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "0.0.0.0/8", "240.0.0.0/4", "255.255.255.255/32",
    "::1/128", "::/128", "fe80::/10", "fc00::/7", "2001:db8::/32", "ff00::/8", "fec0::/10", "64:ff9b::/96",
    "::ffff:0:0/96",
)  # fmt: skip
"""Address ranges outbound federation refuses by default (loopback, private, link-local, reserved)."""


def _parse_cidr(value: object, path: str, _ctx: ParseContext) -> str:
    if not isinstance(value, str):
        raise fail(path, "an IP network such as 10.0.0.0/8 or fe80::/10", value)
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise fail(path, "an IP network such as 10.0.0.0/8 or fe80::/10", value) from None


CIDR = ValueType("an IP network (CIDR)", _parse_cidr)


@attrs.frozen
class TrustedKeyServer:
    """A notary we ask for other servers' keys (``/_matrix/key/v2/query``)."""

    server_name: str = required_option(string(), "The notary's server name (may carry a port).")
    verify_keys: Mapping[str, str] = option(
        {},
        str_mapping(string()),
        "The notary's own keys, key ID -> unpadded base64 ed25519 public key. Its responses must be "
        "signed by one of them; when empty the notary's key is fetched from the notary itself.",
    )


@attrs.frozen
class FederationConfig:
    """Federation with other homeservers."""

    enabled: bool = option(
        True,
        BOOL,
        "Serve the Server-Server API and reach other servers. When false, remote users, rooms and "
        "aliases get the local-only errors and /_matrix/federation answers 404.",
    )
    verify_certificates: bool = option(
        True,
        BOOL,
        "Verify remote servers' TLS certificates. Turn off only for test setups with self-signed "
        "certificates: it lets anyone on the path impersonate any server.",
    )
    ip_range_blacklist: tuple[str, ...] = option(
        DEFAULT_IP_RANGE_BLACKLIST,
        list_of(CIDR),
        "Addresses outbound federation (and key fetches) never connect to, whatever a server name "
        "resolves to.",
        default_doc="loopback, private, link-local, multicast and reserved ranges",
    )
    ip_range_whitelist: tuple[str, ...] = option(
        (),
        list_of(CIDR),
        "Exceptions to ip_range_blacklist (e.g. 127.0.0.0/8 for servers on one test machine). Unsafe "
        "in production.",
    )
    domain_whitelist: tuple[str, ...] | None = option(
        None,
        optional(list_of(string())),
        "When set, federate only with these server names (inbound and outbound); when unset, with all.",
    )
    trusted_key_servers: tuple[TrustedKeyServer, ...] = option(
        (),
        list_of(section_type(TrustedKeyServer)),
        "Notary servers asked for remote servers' signing keys when the origin cannot be reached. "
        "Empty: keys are fetched from each origin directly.",
    )
    key_validity_period_s: int = option(
        7 * 86400,
        integer(minimum=3600, maximum=365 * 86400),
        "How long our published signing key is declared valid (valid_until_ts) from each fetch.",
    )
    key_fetch_failure_cache_s: int = option(
        60,
        integer(minimum=0, maximum=3600),
        "After a remote server's signing key could not be found (origin and notaries failed), how "
        "long lookups of that key fail at once instead of fetching again.",
    )
    request_timeout_s: int = option(
        60,
        integer(minimum=1, maximum=600),
        "Overall time limit of one outbound federation request (connect, send, read the whole answer).",
    )
    max_response_bytes: int = option(
        100 * 1024 * 1024,
        BYTE_SIZE,
        "Largest response body accepted from a remote server (send_join state of a big room is large).",
    )
    max_request_body_bytes: int = option(
        8 * 1024 * 1024,
        BYTE_SIZE,
        "Largest request body accepted on the federation and key APIs (a transaction holds at most "
        "50 PDUs of 64 KiB and 100 EDUs); larger ones get 413 M_TOO_LARGE while still being received.",
    )
    clock_skew_s: int = option(
        300,
        integer(minimum=0, maximum=3600),
        "Tolerated difference between our clock and a remote server's when checking key validity.",
    )
