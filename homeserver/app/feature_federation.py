"""Wires the federation transport (issue 13, ADR 0012): the outbound client and the inbound router.

When ``federation.enabled`` is true, builds:

* :class:`~federation.transport.client.FederationClient` (signed requests to other servers),
  resolving server names with ``twisted.names`` and HTTPS well-known fetches, every address checked
  against ``ip_range_blacklist``/``ip_range_whitelist``, certificates verified unless
  ``verify_certificates`` is false;
* :class:`~federation.transport.server.FederationTransport` on ``hs.resource`` (so every listener,
  TLS or not, serves ``/_matrix/federation/*`` and ``/_matrix/key/*`` next to the client API), with
  ``GET /_matrix/federation/v1/version`` registered.

Both are provided by type so the keyring, inbound servlets, membership dances and sender features
can require them. Until the keyring feature is wired, inbound ``X-Matrix`` requests are checked
against :class:`~federation.transport.server.NoKeysLookup` (every key unknown, so 401); the keyring
feature replaces it with ``FederationTransport.use_key_lookup(keyring)``.

When ``federation.enabled`` is false nothing is built or registered: ``/_matrix/federation`` answers
404 ``M_UNRECOGNIZED``, and features that use the client find none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import defer

from federation.discovery import ServerNameResolver, TwistedDns, WellKnownClient
from federation.transport.client import FederationClient
from federation.transport.connect import AddressPolicy, CheckedConnector, TLSPolicy
from federation.transport.server import FederationTransport
from homeserver.app.features import Feature, FeatureServices, Provided
from sc_proto._version import __version__

if TYPE_CHECKING:
    from homeserver.app.composition import Homeserver

USER_AGENT = f"SecureConnect/{__version__}"


async def wire(hs: Homeserver, _services: FeatureServices) -> Provided:
    """Builds the federation client and transport and registers the version endpoint."""
    config = hs.config.federation
    if not config.enabled:
        return []
    if hs.signing_key is None:
        raise RuntimeError("federation needs the server's signing key (build_homeserver passes it)")
    server_name = hs.config.server.server_name
    dns = TwistedDns()
    connector = CheckedConnector(hs.reactor, dns, AddressPolicy.from_config(config), TLSPolicy(config.verify_certificates))
    resolver = ServerNameResolver(dns, WellKnownClient(hs.reactor, connector, USER_AGENT.encode()), hs.clock.time)
    client = FederationClient(
        hs.reactor, server_name, hs.signing_key, config, resolver, connector, user_agent=USER_AGENT
    )
    hs.reactor.addSystemEventTrigger("before", "shutdown", lambda: defer.ensureDeferred(client.close()))
    transport = FederationTransport(hs.resource, server_name, config, hs.clock.time_msec)
    transport.register_version()
    return [client, transport]


FEATURE = Feature("federation", wire, provides=(FederationClient, FederationTransport))
