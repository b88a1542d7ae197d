"""CORS headers for browser clients (spec client-server-api, "Web Browser Clients").

The spec recommends the same three headers on every response, including errors and ``OPTIONS``
pre-flight answers, so browser clients can read error bodies too.
"""

from __future__ import annotations

from twisted.web.server import Request

ALLOW_ORIGIN = b"*"
"""Value of ``Access-Control-Allow-Origin``."""

ALLOW_METHODS = b"GET, POST, PUT, DELETE, OPTIONS"
"""Value of ``Access-Control-Allow-Methods`` (the spec's recommended list)."""

ALLOW_HEADERS = b"X-Requested-With, Content-Type, Authorization"
"""Value of ``Access-Control-Allow-Headers`` (the spec's recommended list)."""

CORS_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"Access-Control-Allow-Origin", ALLOW_ORIGIN),
    (b"Access-Control-Allow-Methods", ALLOW_METHODS),
    (b"Access-Control-Allow-Headers", ALLOW_HEADERS),
)
"""Every CORS header, as raw name/value pairs (also used when writing a response by hand)."""


def add_cors_headers(request: Request) -> None:
    """Sets the CORS headers on ``request``'s response, replacing earlier values.

    Args:
        request: the request whose response is being prepared.
    """
    for name, value in CORS_HEADERS:
        request.responseHeaders.setRawHeaders(name, [value])
