"""Server-Server API request and response bodies (sans-I/O).

Submodules hold the public names: :mod:`sc_proto.federation.requests` (the membership dances:
make/send join, leave and knock, and invites).
"""

__all__: list[str] = []
