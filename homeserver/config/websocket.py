"""The ``websocket:`` section: sync push over a WebSocket (SecureConnect extension, docs/websocket.md).

The endpoint is always ``/_sc/client/v1/sync/ws`` on the client listeners; only its limits and
timers are configurable.
"""

from __future__ import annotations

import attrs

from homeserver.config._options import BOOL, BYTE_SIZE, integer, option, positive_number


@attrs.frozen
class WebSocketConfig:
    """Limits and keepalive of the WebSocket sync push endpoint."""

    enabled: bool = option(
        True, BOOL, "Serve /_sc/client/v1/sync/ws. When false the path answers 404 M_UNRECOGNIZED."
    )
    ping_interval_s: float = option(
        30.0,
        positive_number(maximum=3600),
        "Seconds between WebSocket pings the server sends to every open connection (keepalive).",
    )
    ping_timeout_s: float = option(
        30.0,
        positive_number(maximum=3600),
        "A connection whose client has not answered a ping within this many seconds is closed.",
    )
    auth_timeout_s: float = option(
        10.0,
        positive_number(maximum=600),
        "A connection that has not sent its 'auth' frame within this many seconds is closed (code 4408).",
    )
    idle_timeout_s: float = option(
        60.0,
        positive_number(maximum=3600),
        "A connection that leaves a sync frame unacknowledged for this many seconds is closed (code 4408).",
    )
    max_connections_per_user: int = option(
        10,
        integer(minimum=1, maximum=1_000_000),
        "Open connections one user may hold at once; a further one is closed after its 'auth' frame "
        "with code 4429 (the older connections stay).",
    )
    max_connections_per_ip: int = option(
        200,
        integer(minimum=1, maximum=1_000_000),
        "Open connections (authenticated or not) from one client IP; a further upgrade request is "
        "answered 429 M_LIMIT_EXCEEDED. Behind a reverse proxy, enable x_forwarded on the listener.",
    )
    max_frame_size: int = option(
        64 * 1024,
        BYTE_SIZE,
        "Largest message a client may send (its 'auth' and 'ack' frames); a larger one closes the "
        "connection with code 1009. Frames the server sends are not limited by this.",
    )
