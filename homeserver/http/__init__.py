"""HTTP layer: routing and error rendering, request parsing, auth, rate limits, CORS, the Site.

Modules: :mod:`homeserver.http.server` (``JsonResource``), :mod:`homeserver.http.servlet`
(parsers), :mod:`homeserver.http.auth` (``Authenticator``), :mod:`homeserver.http.ratelimit`
(``RateLimiter``), :mod:`homeserver.http.cors`, :mod:`homeserver.http.site` (``SCSite``).
"""

__all__: list[str] = []
