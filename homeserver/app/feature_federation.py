"""The ``federation`` feature: starts the federation adapter built by ``build_homeserver`` (issue 13).

``build_homeserver`` builds the adapter's outbound side before the core (a
:class:`~homeserver.app.federation_wiring.FederationWiring`, phase 1) when ``federation.enabled`` is
true and the caller did not inject its own ports. This feature runs phase 2 once the core exists:
the transport is served on ``hs.resource`` (so every listener, TLS or not, serves
``/_matrix/federation/*`` and ``/_matrix/key/*`` next to the client API), with the keyring checking
``X-Matrix``; the key, event, membership and query servlets are registered; the room input gets its
missing-event fetcher; the sender starts. It provides
:class:`~homeserver.app.federation_wiring.FederationServices`.

Without federation nothing is built or registered: ``/_matrix/federation`` answers 404
``M_UNRECOGNIZED`` and remote users, rooms and aliases get the local-only errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from homeserver.app.features import Feature, FeatureServices, Provided
from homeserver.app.federation_wiring import FederationServices

if TYPE_CHECKING:
    from homeserver.app.composition import Homeserver


async def wire(hs: Homeserver, _services: FeatureServices) -> Provided:
    """Starts the adapter (phase 2) when ``build_homeserver`` built one."""
    if hs.federation is None:
        return []
    return [await hs.federation.start(hs)]


FEATURE = Feature("federation", wire, provides=(FederationServices,))
