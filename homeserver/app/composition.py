"""The composition root: builds every object of a homeserver process from its config.

This is the only module that sees every package (DESIGN.md 2.2). Objects are built once, in
dependency order, and handed what they need through their constructors.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from homeserver.api.local import local_only_ports
from homeserver.api.ports import RemotePorts
from homeserver.api.services import (
    AuthAPI,
    DeviceKeysAPI,
    MembershipAPI,
    OutboundEventsAPI,
    ProfileAPI,
    RoomDirectoryAPI,
    RoomFederationAPI,
    SyncSourceRegistry,
)
from homeserver.app.features import Feature, FeatureServices, wire_features
from homeserver.app.federation_wiring import FederationWiring
from homeserver.app.room_wiring import RoomServices, build_room_services, load_or_create_signing_key
from homeserver.app.stream_wiring import StreamWriters, build_stores_and_streams
from homeserver.auth.accounts import AccountService, NewAccount
from homeserver.auth.passwords import Argon2Parameters, PasswordHasher, PasswordPolicy
from homeserver.auth.sessions import SessionService, ThreadRunner
from homeserver.auth.uia import InteractiveAuth
from homeserver.calls.turn import TurnCredentialIssuer
from homeserver.config.database import DatabaseConfig
from homeserver.config.loader import HomeserverConfig
from homeserver.config.ratelimits import RatelimitsConfig
from homeserver.http.auth import Authenticator
from homeserver.http.auth_api import ClientAuthAPI
from homeserver.http.ratelimit import RateLimiter, RateLimitRule
from homeserver.http.server import JsonResource
from homeserver.http.site import SCSite
from homeserver.identity import LocalServer
from homeserver.profiles import LocalProfileReader, ProfileService
from homeserver.rest.admin.registration_tokens import RegistrationTokenServlets
from homeserver.rest.admin.users import AdminUserServlets
from homeserver.rest.client.account import AccountServlets
from homeserver.rest.client.account_data import AccountDataServlets
from homeserver.rest.client.devices import ActivityTrackingAuthenticator, DeviceServlets, LastSeenTracker
from homeserver.rest.client.directory import DirectoryServlets
from homeserver.rest.client.filters import FilterServlets
from homeserver.rest.client.login import LoginServlets
from homeserver.rest.client.profile import ProfileServlets
from homeserver.rest.client.register import RegistrationServlets
from homeserver.rest.client.room_reads import RoomReadServlets
from homeserver.rest.client.rooms import RoomServlets
from homeserver.rest.client.sync import SyncServlets
from homeserver.rest.client.versions import register_versions_servlets
from homeserver.rest.client.voip import VoipServlets
from homeserver.rooms.aliases import RoomAliasService
from homeserver.rooms.creation import RoomCreationService
from homeserver.rooms.directory import RoomDirectoryService
from homeserver.rooms.directory_api import LocalDirectoryReader
from homeserver.rooms.federation_api import RoomFederationService
from homeserver.rooms.membership import MembershipService
from homeserver.rooms.membership_api import RoomMembershipReader
from homeserver.rooms.outbound import OutboundEventReader
from homeserver.rooms.pagination import RoomReader
from homeserver.rooms.upgrade import RoomUpgradeService
from homeserver.storage.engines import DatabaseSettings, create_engine
from homeserver.storage.migrations import prepare_database
from homeserver.storage.pool import DatabasePool
from homeserver.storage.stores import Stores
from homeserver.streams.notifier import Notifier
from homeserver.sync.assembly import build_sync_services
from homeserver.util.clock import Clock
from sc_proto.crypto.keys import SigningKey
from sc_proto.errors import Codes, MatrixError

logger = logging.getLogger(__name__)



SHUTDOWN_CLOSE_TIMEOUT_S = 5.0


async def _with_timeout(d: defer.Deferred[Any], reactor: Any, seconds: float) -> None:
    """Waits for ``d`` at most ``seconds`` (then gives up waiting; ``d`` is cancelled)."""
    d.addTimeout(seconds, reactor)
    try:
        await d
    except (defer.TimeoutError, defer.CancelledError, defer.FirstError):
        # A cancelled gatherResults fails with FirstError(CancelledError), not TimeoutError.
        logger.warning("gave up waiting for connections to close after %.0f s", seconds)


def database_settings(config: DatabaseConfig) -> DatabaseSettings:
    """Translates the ``database`` config section into engine settings."""
    url = config.url
    if config.engine == "sqlite":
        url = "sqlite://" + (config.sqlite_path or ":memory:")
    return DatabaseSettings(
        url=url,
        pool_min=config.pool_min,
        pool_max=config.pool_max,
        sqlite_synchronous=config.sqlite_synchronous.upper(),
        txn_retries=config.txn_retries,
        connect_timeout=config.connect_timeout_s,
    )


def ratelimit_rules(config: RatelimitsConfig) -> dict[str, RateLimitRule]:
    """One rule per (action, key kind): ``login.ip``, ``login.user``, ``message.user``..."""
    rules: dict[str, RateLimitRule] = {}
    for action in ("login", "registration", "message", "join", "default_request"):
        limits = getattr(config, action)
        rules[f"{action}.ip"] = RateLimitRule(limits.per_ip.per_second, limits.per_ip.burst)
        rules[f"{action}.user"] = RateLimitRule(limits.per_user.per_second, limits.per_user.burst)
    return rules


@dataclass
class AdapterServices:
    """What the core offers adapters (``homeserver.api.services``), typed, for ``federation``/``media``.

    ``device_keys`` is filled by the E2EE keys feature module (None until it is wired).
    """

    membership: MembershipAPI
    auth: AuthAPI
    sync_sources: SyncSourceRegistry
    device_keys: DeviceKeysAPI | None = None
    outbound_events: OutboundEventsAPI | None = None
    """Our events after a stream position with their destinations (the federation sender)."""
    directory: RoomDirectoryAPI | None = None
    """Our aliases and published rooms (federation directory and publicRooms queries)."""
    profiles: ProfileAPI | None = None
    """Our users' profiles (federation profile query)."""
    room_federation: RoomFederationAPI | None = None
    """The membership dances' view of the rooms core (ADR 0016); set by :class:`Homeserver`."""


class Homeserver:
    """One homeserver process's objects.

    Args:
        config: the parsed config.
        reactor: the Twisted reactor.
        clock: the clock over that reactor.
        pool: the database pool (already prepared).
        run_in_thread: runs blocking CPU work (password hashing) off the reactor.
        room_services: the rooms core.
        ports: the outward ports (``homeserver.api.ports``); local-only (no federation) when not given.
        stores: every store, built once.
        streams: the stream writers of this process (features write their streams through them).
        signing_key: the server's signing key (federation signs requests with it).
        federation: the federation adapter whose outward ports are in ``ports``; the ``federation``
            feature starts it (None: no federation).

    Attributes:
        features: the services the feature modules provide, by type (``hs.features.get(TypingService)``).
    """

    def __init__(
        self,
        config: HomeserverConfig,
        reactor: Any,
        clock: Clock,
        pool: DatabasePool,
        run_in_thread: ThreadRunner,
        room_services: RoomServices,
        stores: Stores,
        streams: StreamWriters,
        ports: RemotePorts | None = None,
        *,
        signing_key: SigningKey | None = None,
        federation: FederationWiring | None = None,
    ) -> None:
        self.config = config
        self.ports = ports or local_only_ports()
        self.signing_key = signing_key
        self.federation = federation
        self.rooms = room_services
        self.reactor = reactor
        self.clock = clock
        self.pool = pool
        server_name = config.server.server_name
        self.stores = stores
        self.streams = streams
        self.features = FeatureServices()
        self.local_server = LocalServer(server_name)
        argon = config.auth.argon2
        self.hasher = PasswordHasher(Argon2Parameters(argon.time_cost, argon.memory_cost_kib, argon.parallelism))
        pp = config.registration.password_policy
        self.password_policy = PasswordPolicy(
            enabled=pp.enabled,
            minimum_length=pp.minimum_length,
            require_digit=pp.require_digit,
            require_symbol=pp.require_symbol,
            require_lowercase=pp.require_lowercase,
            require_uppercase=pp.require_uppercase,
            forbid_username=pp.forbid_username,
        )
        self.sessions = SessionService(
            self.stores.users, self.stores.devices, self.hasher, config.auth, clock.time_msec, run_in_thread
        )
        # Every authenticated request notes its device's activity (throttled, fire and forget).
        self.last_seen = LastSeenTracker(self.stores.devices.record_last_seen, clock.time_msec)
        self.authenticator: Authenticator = ActivityTrackingAuthenticator(
            self.sessions,
            clock.time_msec,
            allow_query_token=config.auth.allow_access_token_in_query,
            on_authenticated=self.last_seen.on_authenticated,
        )
        self.ratelimiter = RateLimiter(
            clock.time_msec,
            ratelimit_rules(config.ratelimits),
            enabled=config.ratelimits.enabled,
            admins_exempt=config.ratelimits.admins_exempt,
        )
        self.uia = InteractiveAuth(
            self.stores.ui_auth, self.sessions, server_name, clock.time_msec, config.registration.tokens
        )
        self.resource = JsonResource("client")
        self._build_remote_aware_services()
        self.accounts = AccountService(
            self.local_server, self.stores.users, self.sessions, self.stores.profiles, self.password_policy,
            clock.time_msec, self.stores.account_data,
            on_deactivated=self.membership.leave_all_rooms,
            on_profile_changed=self.membership.refresh_profile_in_rooms,
        )
        self.room_creation = RoomCreationService(
            server_name, room_services.creator, self.membership, room_services.rooms, clock.time_msec
        )
        self._register_servlets()
        self.api = self._adapter_services()
        self.site = SCSite(self.resource, reactor, config.server.max_request_body_size)
        self._ports: list[Any] = []
        self._sites: list[SCSite] = []

    def _adapter_services(self) -> AdapterServices:
        """What the core offers the adapters (``hs.api``)."""
        server_name = self.config.server.server_name
        core = self.rooms
        return AdapterServices(
            membership=RoomMembershipReader(core.rooms),
            auth=ClientAuthAPI(self.authenticator, self._can_see_event),
            sync_sources=self.sync.registry,
            outbound_events=OutboundEventReader(server_name, core.events, core.state_groups, core.stream_tracker),
            directory=LocalDirectoryReader(server_name, self.aliases, self.room_directory),
            profiles=LocalProfileReader(server_name, self.stores.profiles),
            room_federation=RoomFederationService(
                server_name, core.room_input, core.creator.state, core.events, core.rooms, core.state_groups,
                self.clock.time_msec,
            ),
        )

    def _build_remote_aware_services(self) -> None:
        """Aliases, membership and profiles (which reach other servers through ``self.ports``)."""
        server_name = self.config.server.server_name
        core = self.rooms
        self.directory_store = self.stores.room_directory
        self.aliases = RoomAliasService(
            server_name, core.creator, core.rooms, self.directory_store, self.clock.time_msec,
            remote=self.ports.directory,
        )
        self.membership = MembershipService(
            server_name, core.creator, core.rooms, self.stores.profiles,
            remote=self.ports.membership, resolve_alias=self.aliases.resolve_alias,
        )
        self.profiles = ProfileService(server_name, self.stores.profiles, self.ports.profiles)
        core.persister.on_persisted.append(
            lambda persisted: self.ports.sender.notify_new_events(persisted.stored.stream_ordering)
        )

    async def _can_see_event(self, user_id: str, event_id: str) -> bool:
        stored = await self.rooms.events.get_event(event_id)
        return stored is not None and await self.rooms.visibility.is_event_visible(user_id, stored)

    def _register_servlets(self) -> None:
        config = self.config
        server_name = config.server.server_name
        register_versions_servlets(
            self.resource,
            server_name=server_name,
            public_baseurl=config.server.public_baseurl,
            authenticator=self.authenticator,
            # Unstable features we implement (clients check these before using them).
            unstable_features={"org.matrix.msc3814": True},
        )
        LoginServlets(
            server_name,
            self.sessions,
            self.stores.users.find_user_case_insensitive,
            self.authenticator,
            self.ratelimiter,
            login_tokens=self.stores.login_tokens,
            uia=self.uia,
            time_msec=self.clock.time_msec,
        ).register(self.resource)
        RegistrationServlets(
            server_name,
            config.registration,
            self.accounts,
            self.sessions,
            self.uia,
            self.ratelimiter,
            self.clock.time_msec,
            self.stores.ui_auth,
        ).register(self.resource)
        AdminUserServlets(
            server_name,
            self.accounts,
            self.stores.users,
            self.stores.devices,
            self.stores.profiles,
            self.sessions,
            self.authenticator,
        ).register(self.resource)
        RegistrationTokenServlets(self.stores.ui_auth, self.authenticator, self.clock.time_msec).register(self.resource)
        self._register_account_servlets()
        self._register_room_servlets()

    def _register_room_servlets(self) -> None:
        """Rooms, events and membership (issue 4)."""
        server_name = self.config.server.server_name
        core = self.rooms
        room_servlets = RoomServlets(
            server_name,
            self.authenticator,
            self.ratelimiter,
            core.creator,
            self.room_creation,
            self.membership,
            core.rooms,
            self.clock.time_msec,
        )
        room_servlets.register(self.resource)
        self.room_reader = RoomReader(
            core.events, core.state_groups, core.visibility, core.stream_tracker, backfill=core.room_input.backfill
        )
        RoomReadServlets(self.authenticator, self.room_reader, core.serializer).register(self.resource)
        self.sync = build_sync_services(
            events=core.events, rooms=core.rooms, state_groups=core.state_groups, serializer=core.serializer,
            tracker=core.stream_tracker, notifier=core.notifier, visibility=core.visibility,
            account_data=self.stores.account_data, time_msec=self.clock.time_msec,
        )
        SyncServlets(self.authenticator, self.sync.engine, self.stores.filters).register(self.resource)
        self._register_directory_servlets(room_servlets)

    def _register_directory_servlets(self, room_servlets: RoomServlets) -> None:
        """Aliases, the published room directory, room upgrades and VoIP (issue 4)."""
        server_name = self.config.server.server_name
        core = self.rooms
        directory_store = self.directory_store
        self.room_directory = RoomDirectoryService(server_name, core.creator, core.rooms, core.events, directory_store)
        self.room_upgrades = RoomUpgradeService(
            server_name, core.creator, self.membership, core.rooms, directory_store, self.aliases
        )
        room_servlets.state_content_checks["m.room.canonical_alias"] = self.aliases.check_canonical_alias_content
        DirectoryServlets(
            server_name, self.authenticator, self.aliases, self.room_directory, self.room_upgrades,
            remote=self.ports.public_rooms,
        ).register(self.resource)
        turn = TurnCredentialIssuer(self.config.calls, self.clock.time_msec)
        VoipServlets(self.authenticator, turn).register(self.resource)

    def _register_account_servlets(self) -> None:
        """Account management (issue 3): password, deactivation, devices, profile, account data, filters."""
        stores = self.stores
        AccountServlets(self.authenticator, self.accounts, self.uia, self.password_policy).register(self.resource)
        DeviceServlets(self.authenticator, stores.devices, self.sessions, self.uia).register(self.resource)
        ProfileServlets(
            self.config.server.server_name,
            self.authenticator,
            stores.profiles,
            on_profile_changed=self.membership.refresh_profile_in_rooms,
            lookups=self.profiles,
        ).register(self.resource)
        AccountDataServlets(self.authenticator, stores.account_data).register(self.resource)
        FilterServlets(self.authenticator, stores.filters).register(self.resource)

    async def create_user(self, localpart_or_id: str, password: str | None, *, admin: bool = False) -> str:
        """Creates an account through :class:`AccountService` (CLI and tests); returns its user ID.

        The password policy applies (as for ``/register``).

        Raises:
            ValueError: the user ID is invalid, another server's or taken, or the password is weak
                (the message names the reason and our server name).
        """
        try:
            localpart = self.accounts.requested_localpart(localpart_or_id)
            return await self.accounts.create_account(NewAccount(localpart, password, admin=admin))
        except MatrixError as e:
            if e.errcode == Codes.USER_IN_USE:
                raise ValueError(f"{self.local_server.user_id(localpart)} already exists") from None
            raise ValueError(f"{e.message} ({self.local_server.name})") from None

    def listen(self) -> None:
        """Opens every configured listener."""
        for listener in self.config.server.listeners:
            site = self.site
            if listener.x_forwarded:
                site = SCSite(
                    self.resource, self.reactor, self.config.server.max_request_body_size, trust_x_forwarded_for=True
                )
            if listener.tls:
                from twisted.internet import ssl

                assert listener.tls_private_key_path and listener.tls_certificate_path  # checked by the config
                context = ssl.DefaultOpenSSLContextFactory(  # type: ignore[no-untyped-call]  # untyped Twisted API
                    listener.tls_private_key_path, listener.tls_certificate_path
                )
                port = self.reactor.listenSSL(listener.port, site, context, interface=listener.bind_address)
                if site not in self._sites:
                    self._sites.append(site)
            else:
                port = self.reactor.listenTCP(listener.port, site, interface=listener.bind_address)
            if site not in self._sites:
                self._sites.append(site)
            self._ports.append(port)
            logger.info("listening on %s:%d", listener.bind_address, listener.port)

    async def shutdown(self) -> None:
        """Stops listening, lets in-flight requests finish, then closes the database."""
        for port in self._ports:
            stopped = port.stopListening()
            if stopped is not None:
                await stopped
        self._ports.clear()
        await self.resource.wait_for_inflight()
        # Flush finished responses and close keep-alive connections before the reactor stops (it would
        # drop unsent bytes); bounded so a stuck client cannot hold shutdown.
        try:
            closing = [site.close_connections() for site in self._sites]
            all_closed = defer.gatherResults(closing, consumeErrors=True)
            await _with_timeout(all_closed, self.reactor, SHUTDOWN_CLOSE_TIMEOUT_S)
        finally:
            # Always: the database threads would keep the process alive after the reactor stops.
            await self.pool.close()


async def build_homeserver(
    config: HomeserverConfig,
    reactor: Any,
    *,
    clock: Clock | None = None,
    threaded: bool = True,
    signing_key: SigningKey | None = None,
    ports: RemotePorts | None = None,
    federation: FederationWiring | None = None,
) -> Homeserver:
    """Builds a homeserver and prepares its database.

    Args:
        config: the parsed config.
        reactor: the reactor.
        clock: the clock (tests pass one over a fake reactor).
        threaded: False runs database transactions and password hashing synchronously in the caller's
            thread (deterministic unit tests).
        signing_key: the server's signing key; read from (or created at) ``server.signing_key_path``
            when not given.
        ports: the outward ports (test fakes); when not given, federation's when ``federation.enabled``
            (see :mod:`homeserver.app.federation_wiring`), else local-only.
        federation: a federation adapter to use (tests: one with in-memory I/O edges); its outward
            ports are laid over ``ports`` (or the local-only ones).
    """
    clock = clock or Clock(reactor)
    engine = create_engine(database_settings(config.database))
    pool = DatabasePool(engine, reactor if threaded else None, run_in_thread=threaded)
    await prepare_database(pool)
    if signing_key is None:
        signing_key = load_or_create_signing_key(config.server.signing_key_path)
    if federation is None and ports is None and config.federation.enabled:
        federation = FederationWiring(config, reactor, clock, signing_key)
    if federation is not None:
        ports = federation.outward_ports(ports or local_only_ports(), pool)
    notifier = Notifier(clock)
    stores, streams = await build_stores_and_streams(pool, notifier)
    room_services = await build_room_services(pool, clock, config.server.server_name, signing_key, stores, notifier)
    if threaded:
        cpu_pool = ThreadPool(minthreads=1, maxthreads=4, name="cpu")
        cpu_pool.start()
        reactor.addSystemEventTrigger("during", "shutdown", cpu_pool.stop)

        def run_in_thread(fn: Callable[..., Any], *args: Any) -> Any:
            return deferToThreadPool(reactor, cpu_pool, fn, *args)

    else:

        async def run_in_thread(fn: Callable[..., Any], *args: Any) -> Any:  # type: ignore[misc]  # same shape
            return fn(*args)

    hs = Homeserver(
        config, reactor, clock, pool, run_in_thread, room_services, stores, streams, ports, signing_key=signing_key,
        federation=federation,
    )
    await wire_feature_modules(hs)
    return hs


def feature_modules() -> list[Feature]:
    """The ``FEATURE`` declared by each feature module ``homeserver/app/feature_*.py``."""
    import homeserver.app as app_package

    names = sorted(m.name for m in pkgutil.iter_modules(app_package.__path__) if m.name.startswith("feature_"))
    features: list[Feature] = []
    for name in names:
        feature = importlib.import_module(f"homeserver.app.{name}").FEATURE
        assert isinstance(feature, Feature), name
        features.append(feature)
    return features


async def wire_feature_modules(hs: Homeserver) -> None:
    """Wires every feature module into ``hs`` in the order their declarations require (ADR 0007).

    (Part of the composition root: only ``homeserver/app`` sees every package.)
    """
    await wire_features(hs, feature_modules())


def run(config: HomeserverConfig) -> int:
    """Runs a single-process homeserver until SIGTERM/SIGINT (``sc-homeserver run``)."""
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    state: dict[str, Homeserver] = {}

    async def start() -> None:
        hs = await build_homeserver(config, reactor)
        hs.listen()
        state["hs"] = hs
        reactor.addSystemEventTrigger("before", "shutdown", lambda: defer.ensureDeferred(hs.shutdown()))
        logger.info("SecureConnect homeserver %s started", config.server.server_name)

    def failed(failure: Any) -> None:
        print(f"error: could not start: {failure.getErrorMessage()}", file=sys.stderr)
        logger.error("start-up failed", exc_info=(failure.type, failure.value, failure.tb))
        state["failed"] = True  # type: ignore[assignment]  # a flag beside the homeserver
        reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(start()).addErrback(failed))
    reactor.run()
    return 1 if "failed" in state else 0


async def register_user_in(hs: Homeserver, user: str, password: str, admin: bool) -> int:
    """The ``register-user`` command on a built homeserver; returns the exit code (0: created)."""
    try:
        user_id = await hs.create_user(user, password, admin=admin)
    except Exception as e:
        print(f"error: {getattr(e, 'message', None) or e}", file=sys.stderr)
        return 1
    print(f"created {user_id}{' (admin)' if admin else ''}")
    return 0


def register_user(config: HomeserverConfig, user: str, password: str, admin: bool) -> int:
    """Creates an account from the command line (``sc-homeserver register-user``)."""
    from twisted.internet import task

    result = {"code": 0}

    async def main(reactor: Any) -> None:
        hs = await build_homeserver(config, reactor)
        try:
            result["code"] = await register_user_in(hs, user, password, admin)
        finally:
            await hs.pool.close()

    try:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    except SystemExit as e:
        if e.code not in (0, None):
            return int(e.code) if isinstance(e.code, int) else 1
    return result["code"]
