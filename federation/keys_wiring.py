"""Builds the server-key parts of the federation adapter (called by ``homeserver/app/feature_federation.py``).

Usage from the composition root::

    keys = build_key_services(
        pool=pool, clock=clock, http=federation_client, config=config.federation,
        server_name=config.server.server_name, signing_key=signing_key,
        signing_key_path=config.server.signing_key_path,
    )
    register_key_servlets(router, keys)
    # keys.keyring is the VerifyKeyLookup the inbound transport checks X-Matrix with.
"""

from __future__ import annotations

from dataclasses import dataclass

from federation.interfaces import FederationHttp, FederationRouter
from federation.key_servlets import KeyServlets
from federation.key_store import ServerKeyStore
from federation.keyring import Keyring
from federation.local_keys import LocalKeys, load_local_keys
from homeserver.config.federation import FederationConfig
from homeserver.storage.pool import DatabasePool
from homeserver.util.clock import Clock
from sc_proto.crypto.keys import SigningKey


@dataclass(frozen=True)
class KeyServices:
    """The server-key objects of one process.

    Attributes:
        local: our keys (current signing key, retired verify keys).
        store: the remote-key tables.
        keyring: remote keys (implements ``VerifyKeyLookup``).
        servlets: the key API servlets.
    """

    local: LocalKeys
    store: ServerKeyStore
    keyring: Keyring
    servlets: KeyServlets


def build_key_services(
    *,
    pool: DatabasePool,
    clock: Clock,
    http: FederationHttp,
    config: FederationConfig,
    server_name: str,
    signing_key: SigningKey,
    signing_key_path: str,
) -> KeyServices:
    """Builds our key set, the key store, the keyring and the servlets.

    Args:
        pool: the database.
        clock: the time source.
        http: the outbound federation client (key fetches are sent unsigned).
        config: the ``federation:`` section.
        server_name: our server name.
        signing_key: our current signing key (as loaded by ``room_wiring.load_or_create_signing_key``).
        signing_key_path: its file; the retired keys live next to it (``federation/local_keys.py``).

    Raises:
        KeyFileError: the retired-keys file is malformed.
        ValueError: a ``trusted_key_servers`` key is malformed.
    """
    local = load_local_keys(server_name, signing_key, signing_key_path)
    store = ServerKeyStore(pool)
    keyring = Keyring(
        local=local,
        store=store,
        http=http,
        clock=clock,
        trusted_key_servers=config.trusted_key_servers,
        clock_skew_s=config.clock_skew_s,
        failure_cache_s=config.key_fetch_failure_cache_s,
    )
    servlets = KeyServlets(keyring, local, clock, config.key_validity_period_s * 1000)
    return KeyServices(local, store, keyring, servlets)


def register_key_servlets(router: FederationRouter, services: KeyServices) -> None:
    """Registers ``/_matrix/key/v2/server`` and the notary ``/_matrix/key/v2/query`` routes on ``router``."""
    services.servlets.register(router)
