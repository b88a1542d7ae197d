"""Discovery endpoints: spec versions, client well-known, and capabilities.

* ``GET /_matrix/client/versions``
* ``GET /.well-known/matrix/client``
* ``GET /_matrix/client/v3/capabilities`` (and the legacy ``r0`` path)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from twisted.web.server import Request

from homeserver.http.auth import Authenticator, Requester
from homeserver.http.server import JsonDict, JsonResource
from sc_proto.errors import Codes, MatrixError
from sc_proto.room_versions import KNOWN_ROOM_VERSIONS

SUPPORTED_SPEC_VERSIONS: tuple[str, ...] = tuple(f"v1.{minor}" for minor in range(1, 17))
"""Client-Server spec versions we claim (v1.1 to v1.16)."""

DEFAULT_ROOM_VERSION = "12"
"""Room version used for new rooms unless configured otherwise."""

CapabilitiesProvider = Callable[[Requester], Awaitable[Mapping[str, Any]]]
"""Returns capability entries for a user; they replace or extend the defaults."""


def default_capabilities(default_room_version: str = DEFAULT_ROOM_VERSION) -> JsonDict:
    """Returns the capabilities every user gets unless a provider overrides them."""
    return {
        "m.change_password": {"enabled": True},
        "m.room_versions": {
            "default": default_room_version,
            "available": {
                identifier: version.disposition.value
                for identifier, version in KNOWN_ROOM_VERSIONS.items()
            },
        },
        "m.set_displayname": {"enabled": True},
        "m.set_avatar_url": {"enabled": True},
        "m.3pid_changes": {"enabled": False},
        "m.get_login_token": {"enabled": True},
    }


def register_versions_servlets(
    resource: JsonResource,
    *,
    server_name: str,
    public_baseurl: str | None,
    unstable_features: Mapping[str, bool] | None = None,
    capabilities_provider: CapabilitiesProvider | None = None,
    authenticator: Authenticator,
    default_room_version: str = DEFAULT_ROOM_VERSION,
) -> None:
    """Registers the discovery servlets on ``resource``.

    Args:
        resource: the client API resource.
        server_name: our server name (kept for per-server features; not exposed here).
        public_baseurl: the client API base URL for ``.well-known``; None answers 404 there.
        unstable_features: ``unstable_features`` of ``/versions``.
        capabilities_provider: per-user capability overrides.
        authenticator: authenticates ``/capabilities`` requests.
        default_room_version: advertised default room version.

    Raises:
        ValueError: ``default_room_version`` is not a known room version.
    """
    if default_room_version not in KNOWN_ROOM_VERSIONS:
        raise ValueError(f"unknown default room version {default_room_version!r}")
    del server_name  # accepted for a stable signature; nothing here depends on it yet
    versions_body: JsonDict = {
        "versions": list(SUPPORTED_SPEC_VERSIONS),
        "unstable_features": dict(unstable_features or {}),
    }

    async def get_versions(request: Request) -> tuple[int, JsonDict]:
        """GET /_matrix/client/versions"""
        return 200, versions_body

    async def get_well_known(request: Request) -> tuple[int, JsonDict]:
        """GET /.well-known/matrix/client"""
        if not public_baseurl:
            raise MatrixError(404, Codes.NOT_FOUND, "No client discovery information")
        return 200, {"m.homeserver": {"base_url": public_baseurl}}

    async def get_capabilities(request: Request) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/capabilities"""
        # NOTSPEC: the spec's guest-access list omits /capabilities; it is read-only, so guests may.
        requester = await authenticator.get_requester(request, allow_guest=True)
        capabilities = default_capabilities(default_room_version)
        if capabilities_provider is not None:
            capabilities.update(await capabilities_provider(requester))
        return 200, {"capabilities": capabilities}

    resource.register("GET", "/_matrix/client/versions", get_versions)
    resource.register("GET", "/.well-known/matrix/client", get_well_known)
    resource.register(
        "GET",
        ["/_matrix/client/r0/capabilities", "/_matrix/client/v3/capabilities"],
        get_capabilities,
    )
