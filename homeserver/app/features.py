"""Typed feature wiring: what each feature module requires and provides, and the order they wire in.

Theory of operation (ADR 0007, superseding the wiring part of ADR 0004):

* Each ``homeserver/app/feature_*.py`` declares ``FEATURE = Feature(...)``: its name, the service
  types it ``requires`` (must be provided by another feature), the ones it uses when present
  (``optional``), the types it ``provides``, the rate-limit rules it contributes, and
  ``async def wire(hs, services) -> Provided``.
* :func:`order_features` sorts the features topologically by those declarations (ties by name, so
  the order is deterministic). A cycle, a missing provider or two providers of one type is an error
  naming the features involved; file names no longer matter.
* A feature reads what it requires from the :class:`FeatureServices` view it is handed, by type
  (``services.get(DeviceListTracker)``), never from attributes of the homeserver. The view only
  answers the types the feature declared, so an undeclared dependency fails at wiring time.
* What a feature returns is checked against its ``provides``; everything provided lands in
  ``hs.features`` (tests reach services as ``hs.features.get(TypingService)``). A feature may leave
  a declared type out when it is disabled by config (``find`` then answers None).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from homeserver.http.ratelimit import RateLimitRule

if TYPE_CHECKING:
    from homeserver.app.composition import Homeserver

T = TypeVar("T")

Provided = Sequence[object]
"""The service objects a feature built (each an instance of one of its ``provides`` types)."""


class FeatureWiringError(Exception):
    """The features' declarations do not fit together (cycle, missing or duplicate provider)."""


class FeatureServices:
    """Feature services by type.

    Args:
        allowed: the types :meth:`get`/:meth:`find` answer (None: every type; the homeserver's own).
    """

    def __init__(self, allowed: frozenset[type] | None = None, owner: str = "homeserver") -> None:
        self._services: dict[type, object] = {}
        self._allowed = allowed
        self._owner = owner

    def add(self, service: object, as_type: type) -> None:
        """Records ``service`` as the provider of ``as_type``."""
        if as_type in self._services:
            raise FeatureWiringError(f"{as_type.__name__} is provided twice")
        self._services[as_type] = service

    def get(self, cls: type[T]) -> T:
        """The service of type ``cls``.

        Raises:
            KeyError: nobody provided it (or it is disabled by config).
        """
        found = self.find(cls)
        if found is None:
            raise KeyError(f"no {cls.__name__} was provided (is its feature disabled?)")
        return found

    def find(self, cls: type[T]) -> T | None:
        """The service of type ``cls``, or None when absent."""
        if self._allowed is not None and cls not in self._allowed:
            raise FeatureWiringError(f"feature {self._owner!r} reads {cls.__name__} without declaring it")
        service = self._services.get(cls)
        if service is None:
            return None
        assert isinstance(service, cls)
        return service

    def view(self, allowed: Iterable[type], owner: str) -> FeatureServices:
        """A read view that answers only ``allowed`` (what feature ``owner`` declared)."""
        view = FeatureServices(frozenset(allowed), owner)
        view._services = self._services
        return view


@dataclass(frozen=True)
class Feature:
    """One feature module's declaration.

    Attributes:
        name: the feature's name (``typing_receipts``).
        wire: builds the feature's services from ``hs`` and the view of what it requires.
        requires: service types other features must provide (wired first).
        optional: service types used when some feature provides them (wired first when present).
        provides: the service types ``wire`` returns.
        rate_limits: rate-limit rules it adds to the one :class:`~homeserver.http.ratelimit.RateLimiter`.
    """

    name: str
    wire: Callable[[Homeserver, FeatureServices], Awaitable[Provided]]
    requires: tuple[type, ...] = ()
    optional: tuple[type, ...] = ()
    provides: tuple[type, ...] = ()
    rate_limits: Mapping[str, RateLimitRule] = field(default_factory=dict)


def order_features(features: Iterable[Feature]) -> list[Feature]:
    """Sorts ``features`` so every feature comes after the providers of what it requires or uses.

    Raises:
        FeatureWiringError: two features provide one type, a required type has no provider, or the
            requirements form a cycle (the message names the features).
    """
    by_name = {f.name: f for f in features}
    provider: dict[type, str] = {}
    for feature in sorted(by_name.values(), key=lambda f: f.name):
        for cls in feature.provides:
            if cls in provider:
                raise FeatureWiringError(
                    f"{cls.__name__} is provided by both {provider[cls]!r} and {feature.name!r}"
                )
            provider[cls] = feature.name
    deps: dict[str, set[str]] = {}
    for feature in by_name.values():
        deps[feature.name] = set()
        for cls in feature.requires:
            if cls not in provider:
                raise FeatureWiringError(f"feature {feature.name!r} requires {cls.__name__}, which no feature provides")
            deps[feature.name].add(provider[cls])
        deps[feature.name].update(provider[cls] for cls in feature.optional if cls in provider)
        deps[feature.name].discard(feature.name)
    ordered: list[Feature] = []
    done: set[str] = set()
    while len(done) < len(by_name):
        ready = sorted(n for n in by_name if n not in done and deps[n] <= done)
        if not ready:
            stuck = sorted(n for n in by_name if n not in done)
            cycle = ", ".join(f"{n} -> {sorted(deps[n] - done)}" for n in stuck)
            raise FeatureWiringError(f"feature requirements form a cycle: {cycle}")
        for name in ready:
            ordered.append(by_name[name])
            done.add(name)
    return ordered


async def wire_features(hs: Homeserver, features: Iterable[Feature]) -> None:
    """Adds every feature's rate limits, then wires the features in dependency order into ``hs.features``.

    Raises:
        FeatureWiringError: see :func:`order_features`; or a feature returned a service it did not
            declare.
    """
    ordered = order_features(features)
    for feature in ordered:
        hs.ratelimiter.add_rules(feature.rate_limits)
    for feature in ordered:
        view = hs.features.view((*feature.requires, *feature.optional), feature.name)
        for service in await feature.wire(hs, view):
            as_type = next((cls for cls in feature.provides if isinstance(service, cls)), None)
            if as_type is None:
                raise FeatureWiringError(f"feature {feature.name!r} returned an undeclared {type(service).__name__}")
            hs.features.add(service, as_type)
