"""The keyring: remote servers' verify keys, fetched, verified, cached and checked for validity.

Theory of operation
-------------------
:meth:`Keyring.get_verify_key` answers "which key ``key_id`` did ``server_name`` have at ``at_ts``":

1. Our own server name is answered from :class:`~federation.local_keys.LocalKeys` (no request).
2. The in-memory cache (bounded LRU of servers), then the database (``federation/key_store.py``), are
   asked for a key valid at ``at_ts`` (:meth:`ServerVerifyKey.is_valid_at`, ``clock_skew_s`` tolerated
   on ``valid_until_ts``). A hit needs no request.
3. Otherwise the key is fetched: ``GET /_matrix/key/v2/server`` from the origin (unsigned), then, if
   that failed or did not yield the key, ``POST /_matrix/key/v2/query`` to each ``trusted_key_servers``
   entry in order with ``minimum_valid_until_ts = at_ts``. Every response is verified
   (``sc_proto.federation.keys``: self-signature, ``server_name``, validity capped at 7 days; a
   notary's answer also needs the notary's signature) and stored before it is used. A key whose
   ``valid_until_ts`` has passed is therefore refetched on the next lookup that needs it.
4. Fetches are coalesced per server: while one is in flight, other lookups for that server wait for it
   and then re-check the cache (N waiters, one request). A waiter that still misses its key (another
   key ID) fetches once more itself.
5. A lookup that found nothing is remembered for ``failure_cache_s`` (per server and key ID, bounded),
   so a flood of events with unknown keys costs one fetch, not one per event.

The notary side (:meth:`Keyring.get_server_keys_for_notary`) serves the latest stored response while it
is within half its lifetime and satisfies ``minimum_valid_until_ts``; otherwise it asks the origin
(never other notaries, so two notaries trusting each other cannot loop) and falls back to the stored
response when the origin is down, as the spec asks.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from twisted.internet import defer

from federation.interfaces import FederationHttp, RemoteHttpError, RemoteUnreachable
from federation.key_store import ServerKeyStore, StoredResponse
from federation.local_keys import LocalKeys
from homeserver.config.federation import TrustedKeyServer
from homeserver.util.clock import Clock
from sc_proto.crypto.keys import (
    VerifyKey,
    decode_verify_key_base64,
    is_signing_algorithm_supported,
    parse_key_id,
)
from sc_proto.crypto.signing import verify_json
from sc_proto.errors import Codes, MatrixError, RemoteProtocolError, SignatureError
from sc_proto.federation.keys import (
    MAX_KEY_VALIDITY_MS,
    KeyQuery,
    ServerKeys,
    ServerVerifyKey,
    build_key_query_request,
    parse_notary_entry,
    parse_notary_response,
    parse_server_keys,
)
from sc_proto.identifiers import is_valid_server_name

logger = logging.getLogger(__name__)
K = TypeVar("K")
V = TypeVar("V")

SERVER_KEYS_PATH = "/_matrix/key/v2/server"
KEY_QUERY_PATH = "/_matrix/key/v2/query"
MAX_KEY_RESPONSE_BYTES = 64 * 1024
"""Largest server-keys response accepted (and stored, and re-served as a notary); real ones are ~1 KiB."""
MAX_SIGNATURES_CHECKED = 8
"""Supported-algorithm signatures of one server looked at per object (each may cost a key fetch)."""


class _Lru(OrderedDict[K, V]):
    """An ordered dict that drops its oldest entries beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: K, value: V) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


def _unauthorized(message: str) -> MatrixError:
    return MatrixError(401, Codes.UNAUTHORIZED, message)


class Keyring:
    """Implements :class:`federation.interfaces.VerifyKeyLookup` (see the module docstring).

    Args:
        local: our own keys.
        store: the key tables.
        http: outbound requests.
        clock: the time source.
        trusted_key_servers: notaries, asked in order.
        clock_skew_s: tolerance added to ``valid_until_ts`` when checking a current key.
        failure_cache_s: how long a failed lookup is not retried.
        cache_servers: how many servers' keys the memory cache holds.
        fetch_timeout_s: time limit of one key request (None: the client's default).
    """

    def __init__(
        self,
        *,
        local: LocalKeys,
        store: ServerKeyStore,
        http: FederationHttp,
        clock: Clock,
        trusted_key_servers: Sequence[TrustedKeyServer] = (),
        clock_skew_s: int = 300,
        failure_cache_s: int = 60,
        cache_servers: int = 1000,
        fetch_timeout_s: float | None = None,
    ) -> None:
        self._local = local
        self._store = store
        self._http = http
        self._clock = clock
        self._notaries = [(n.server_name, _decode_notary_keys(n)) for n in trusted_key_servers]
        self._skew_ms = clock_skew_s * 1000
        self._failure_ms = failure_cache_s * 1000
        self._timeout_s = fetch_timeout_s
        self._keys: _Lru[str, dict[str, ServerVerifyKey]] = _Lru(max(1, cache_servers))
        self._failures: _Lru[tuple[str, ...], int] = _Lru(10 * cache_servers)
        self._inflight: dict[tuple[str, str], list[defer.Deferred[None]]] = {}
        self.requests_made = 0
        """Key requests sent (for tests and metrics)."""

    @property
    def server_name(self) -> str:
        """Our server name."""
        return self._local.server_name

    # --- lookups ----------------------------------------------------------------------------------

    async def get_verify_key(self, server_name: str, key_id: str, at_ts: int) -> VerifyKey:
        """The key ``key_id`` of ``server_name`` valid at ``at_ts`` (see the module docstring).

        Raises:
            MatrixError: 401 ``M_UNAUTHORIZED`` when no such key valid at that time can be found.
        """
        if server_name == self._local.server_name:
            own = self._local.verify_key_at(key_id, at_ts)
            if own is None:
                raise _unauthorized(f"no key {key_id} of ours valid at that time")
            return own
        if not is_valid_server_name(server_name) or not _is_supported_key_id(key_id):
            raise _unauthorized("no such key")
        found = await self._lookup_cached(server_name, key_id, at_ts)
        if found is not None:
            return found
        if self._failed_recently(("key", server_name, key_id)):
            raise _unauthorized(f"no key {key_id} of {server_name} valid at that time (recently failed)")
        for _ in range(2):
            led = await self._coalesced(
                ("fetch", server_name), lambda: self._fetch(server_name, key_id, at_ts)
            )
            found = await self._lookup_cached(server_name, key_id, at_ts)
            if found is not None:
                return found
            if led or self._failed_recently(("key", server_name, key_id)):
                break
            # We waited on a fetch made for another key ID or time: one fetch of our own.
        raise _unauthorized(f"no key {key_id} of {server_name} valid at that time")

    async def verify_json_for_server(self, server_name: str, obj: Mapping[str, Any], at_ts: int) -> None:
        """Checks ``obj`` carries a valid signature of ``server_name`` by a key valid at ``at_ts``.

        Signatures by unknown or expired keys are skipped ("Validating hashes and signatures on
        received events"); every signature by a known valid key must verify, and there must be one.

        Raises:
            MatrixError: 401 ``M_UNAUTHORIZED`` (no signature, unknown key, bad signature).
        """
        signatures = obj.get("signatures") if isinstance(obj, Mapping) else None
        ours = signatures.get(server_name) if isinstance(signatures, Mapping) else None
        if not isinstance(ours, Mapping):
            raise _unauthorized(f"no signature from {server_name}")
        key_ids = sorted(k for k in ours if isinstance(k, str) and _is_supported_key_id(k))
        verified = False
        for key_id in key_ids[:MAX_SIGNATURES_CHECKED]:
            try:
                verify_key = await self.get_verify_key(server_name, key_id, at_ts)
            except MatrixError:
                continue
            try:
                verify_json(obj, server_name, verify_key, key_id=key_id)
            except SignatureError:
                raise _unauthorized(f"bad signature from {server_name} with {key_id}") from None
            verified = True
        if not verified:
            raise _unauthorized(f"no signature from {server_name} by a key valid at that time")

    # --- cache ------------------------------------------------------------------------------------

    def _memory_key(self, server_name: str, key_id: str, at_ts: int) -> VerifyKey | None:
        keys = self._keys.get(server_name)
        key = keys.get(key_id) if keys is not None else None
        if key is None or not key.is_valid_at(at_ts, skew_ms=self._skew_ms):
            return None
        self._keys.move_to_end(server_name)
        return key.verify_key

    async def _lookup_cached(self, server_name: str, key_id: str, at_ts: int) -> VerifyKey | None:
        found = self._memory_key(server_name, key_id, at_ts)
        if found is not None:
            return found
        # Another worker (or an earlier run, or the fetch just made) may have stored it.
        stored = await self._store.get_server_keys(server_name)
        self._keys.put(server_name, stored)
        key = stored.get(key_id)
        return key.verify_key if key is not None and key.is_valid_at(at_ts, skew_ms=self._skew_ms) else None

    def _failed_recently(self, key: tuple[str, ...]) -> bool:
        until = self._failures.get(key)
        if until is None:
            return False
        if until > self._clock.time_msec():
            return True
        del self._failures[key]
        return False

    async def _remember(self, keys: ServerKeys) -> None:
        await self._store.store_server_keys(keys)
        self._keys.put(keys.server_name, await self._store.get_server_keys(keys.server_name))

    async def _coalesced(self, key: tuple[str, str], fn: Callable[[], Awaitable[None]]) -> bool:
        """Runs ``fn`` unless a call with the same key is in flight, in which case waits for that one.

        Returns:
            True when this call ran ``fn`` (it led), False when it waited on another.
        """
        waiters = self._inflight.get(key)
        if waiters is not None:
            waiter: defer.Deferred[None] = defer.Deferred()
            waiters.append(waiter)
            await waiter
            return False
        self._inflight[key] = waiters = []
        try:
            await fn()
        finally:
            del self._inflight[key]
            for waiter in waiters:
                waiter.callback(None)
        return True

    # --- fetching ---------------------------------------------------------------------------------

    async def _fetch(self, server_name: str, key_id: str, at_ts: int) -> None:
        """Origin, then notaries; records the failure before the waiters wake (so they do not retry)."""
        await self._fetch_from_origin(server_name)
        if await self._lookup_cached(server_name, key_id, at_ts) is not None:
            return
        for notary_name, notary_keys in self._notaries:
            if notary_name == server_name:
                continue
            await self._fetch_from_notary(notary_name, notary_keys, server_name, key_id, at_ts)
            if await self._lookup_cached(server_name, key_id, at_ts) is not None:
                return
        self._failures.put(("key", server_name, key_id), self._clock.time_msec() + self._failure_ms)

    async def _fetch_from_origin(self, server_name: str) -> bool:
        """``GET /_matrix/key/v2/server`` from the server itself; stores and returns whether it worked."""
        if self._failed_recently(("origin", server_name)):
            return False
        self.requests_made += 1
        try:
            response = await self._http.get_json(
                server_name, SERVER_KEYS_PATH, signed=False, timeout_s=self._timeout_s
            )
            _check_size(response, MAX_KEY_RESPONSE_BYTES)
            keys = parse_server_keys(
                response, expected_server_name=server_name, received_ts=self._clock.time_msec()
            )
        except (RemoteUnreachable, RemoteHttpError, MatrixError) as e:
            logger.info(
                "key fetch from %s failed: %s", server_name, _describe(e), extra={"destination": server_name}
            )
            self._failures.put(("origin", server_name), self._clock.time_msec() + self._failure_ms)
            return False
        await self._remember(keys)
        return True

    async def _fetch_from_notary(
        self, notary_name: str, configured: Mapping[str, VerifyKey], server_name: str, key_id: str, at_ts: int
    ) -> None:
        notary_keys = configured or await self._notary_keys(notary_name)
        if not notary_keys:
            logger.info(
                "no verify key of notary %s; skipping it", notary_name, extra={"destination": notary_name}
            )
            return
        body = build_key_query_request([KeyQuery(server_name, (key_id,), at_ts)])
        self.requests_made += 1
        try:
            answer = await self._http.post_json(
                notary_name, KEY_QUERY_PATH, body, signed=False, timeout_s=self._timeout_s
            )
            _check_size(answer, 16 * MAX_KEY_RESPONSE_BYTES)
            entries = parse_notary_response(answer)
        except (RemoteUnreachable, RemoteHttpError, MatrixError) as e:
            logger.info(
                "key query to notary %s failed: %s",
                notary_name,
                _describe(e),
                extra={"destination": notary_name},
            )
            return
        for entry in entries:
            if entry.get("server_name") != server_name:
                continue
            try:
                _check_size(entry, MAX_KEY_RESPONSE_BYTES)
                keys = parse_notary_entry(
                    entry,
                    expected_server_name=server_name,
                    notary_name=notary_name,
                    notary_keys=notary_keys,
                    received_ts=self._clock.time_msec(),
                )
            except MatrixError as e:
                logger.warning(
                    "notary %s served keys of %s that do not verify: %s",
                    notary_name,
                    server_name,
                    _describe(e),
                    extra={"destination": notary_name},
                )
                continue
            await self._remember(keys)

    async def _notary_keys(self, notary_name: str) -> dict[str, VerifyKey]:
        """A notary without configured keys: its own current keys, fetched from it when not cached."""
        now = self._clock.time_msec()

        def valid(keys: Mapping[str, ServerVerifyKey]) -> dict[str, VerifyKey]:
            return {
                k: v.verify_key
                for k, v in keys.items()
                if v.valid_until_ts is not None and now <= v.valid_until_ts + self._skew_ms
            }

        found = valid(await self._store.get_server_keys(notary_name))
        if not found:
            await self._coalesced(("origin", notary_name), lambda: self._fetch_origin_quiet(notary_name))
            found = valid(await self._store.get_server_keys(notary_name))
        return found

    async def _fetch_origin_quiet(self, server_name: str) -> None:
        await self._fetch_from_origin(server_name)

    # --- the notary side --------------------------------------------------------------------------

    async def get_server_keys_for_notary(
        self, server_name: str, minimum_valid_until_ts: int
    ) -> list[dict[str, Any]]:
        """The signed key responses we can serve for ``server_name`` (empty when we have none).

        Args:
            server_name: the server asked about (already validated).
            minimum_valid_until_ts: the asker wants keys valid until at least this time (ms).
        """
        if server_name == self._local.server_name:
            return []  # the servlet serves our own response
        now = self._clock.time_msec()
        stored = await self._store.get_server_keys_json(server_name)
        recently = stored is not None and now - stored.fetched_ts < self._failure_ms
        if stored is None or not (recently or _fresh(stored, now, minimum_valid_until_ts)):
            # At most one refetch per failure_cache_s per server, whatever askers want: an asker
            # demanding a validity the origin never gives must not turn us into a request amplifier.
            await self._coalesced(("origin", server_name), lambda: self._fetch_origin_quiet(server_name))
            stored = await self._store.get_server_keys_json(server_name)
        return [stored.response] if stored is not None else []


def _fresh(stored: StoredResponse, now: int, minimum_valid_until_ts: int) -> bool:
    """Within half its lifetime (keys.yaml: notaries cache for half of it) and valid long enough.

    The lifetime is capped at 7 days like every validity (a response "valid for a year" is refetched
    after 3.5 days).
    """
    lifetime = min(max(0, stored.valid_until_ts - stored.fetched_ts), MAX_KEY_VALIDITY_MS)
    half_life_end = stored.fetched_ts + lifetime // 2
    return now <= half_life_end and stored.valid_until_ts >= minimum_valid_until_ts


def _check_size(obj: object, limit: int) -> None:
    """Refuses a decoded answer whose JSON is over ``limit`` bytes (the client allows far more)."""
    if len(json.dumps(obj, ensure_ascii=False).encode("utf-8")) > limit:
        raise RemoteProtocolError("key response too large", Codes.TOO_LARGE)


def _is_supported_key_id(key_id: object) -> bool:
    try:
        parse_key_id(key_id)
    except SignatureError:
        return False
    return isinstance(key_id, str) and is_signing_algorithm_supported(key_id)


def _describe(error: Exception) -> str:
    if isinstance(error, MatrixError):
        return f"{error.errcode.value}: {error.message}"
    return str(error)


def _decode_notary_keys(notary: TrustedKeyServer) -> dict[str, VerifyKey]:
    """The configured keys of a notary.

    Raises:
        ValueError: a key ID or key is malformed (a configuration error, reported at start).
    """
    keys: dict[str, VerifyKey] = {}
    for key_id, key_b64 in notary.verify_keys.items():
        try:
            algorithm, version = parse_key_id(key_id)
            keys[key_id] = decode_verify_key_base64(algorithm, version, key_b64)
        except SignatureError as e:
            raise ValueError(f"trusted_key_servers: {notary.server_name} {key_id!r}: {e.message}") from None
    return keys
