"""Typed feature wiring: declarations order the features; every service and store is built once."""

from __future__ import annotations

import unittest
from typing import Any

from twisted.internet.defer import ensureDeferred

from homeserver.app.composition import feature_modules
from homeserver.app.features import (
    Feature,
    FeatureServices,
    FeatureWiringError,
    Provided,
    order_features,
    wire_features,
)
from homeserver.e2ee.dehydrated import DehydratedDeviceService
from homeserver.e2ee.device_lists import DeviceListTracker
from homeserver.e2ee.to_device import ToDeviceService
from homeserver.ephemeral.typing import TypingService
from homeserver.ephemeral.unread import UnreadCounter
from homeserver.push.service import PushRulesService
from homeserver.rest.client.typing import RATE_LIMIT_ACTION as TYPING_ACTION
from tests.homeserver.server_case import FullHomeserverTestCase


class A:
    pass


class B:
    pass


class C:
    pass


async def _nothing(_hs: Any, _services: FeatureServices) -> Provided:
    return []


def feature(name: str, requires: tuple[type, ...] = (), provides: tuple[type, ...] = (), **kw: Any) -> Feature:
    return Feature(name, _nothing, requires=requires, provides=provides, **kw)


class OrderFeaturesTestCase(unittest.TestCase):
    def test_providers_come_first_whatever_the_names(self) -> None:
        ordered = order_features(
            [feature("a_user", requires=(B,)), feature("z_provider", provides=(B,)), feature("m_alone")]
        )
        self.assertEqual([f.name for f in ordered], ["m_alone", "z_provider", "a_user"])

    def test_optional_dependency_orders_when_present_and_is_ignored_when_absent(self) -> None:
        ordered = order_features([feature("a", optional=(B,)), feature("b", provides=(B,))])
        self.assertEqual([f.name for f in ordered], ["b", "a"])
        self.assertEqual([f.name for f in order_features([feature("a", optional=(B,))])], ["a"])

    def test_a_cycle_is_an_error_naming_the_features(self) -> None:
        features = [
            feature("first", requires=(B,), provides=(A,)),
            feature("second", requires=(C,), provides=(B,)),
            feature("third", requires=(A,), provides=(C,)),
            feature("fine"),
        ]
        with self.assertRaisesRegex(FeatureWiringError, "cycle: first -> \\['second'\\], second -> \\['third'\\]"):
            order_features(features)

    def test_a_missing_provider_is_an_error(self) -> None:
        with self.assertRaisesRegex(FeatureWiringError, "feature 'needy' requires B, which no feature provides"):
            order_features([feature("needy", requires=(B,)), feature("other", provides=(A,))])

    def test_two_providers_of_one_type_is_an_error(self) -> None:
        with self.assertRaisesRegex(FeatureWiringError, "A is provided by both 'one' and 'two'"):
            order_features([feature("one", provides=(A,)), feature("two", provides=(A,))])

    def test_the_real_features_order(self) -> None:
        names = [f.name for f in order_features(feature_modules())]
        self.assertLess(names.index("e2ee_keys"), names.index("e2ee_backup"))
        self.assertLess(names.index("e2ee_keys"), names.index("dehydrated_devices"))
        self.assertLess(names.index("push_rules"), names.index("typing_receipts"))


class FeatureServicesTestCase(unittest.TestCase):
    def test_a_view_answers_only_declared_types(self) -> None:
        services = FeatureServices()
        services.add(A(), A)
        view = services.view((A,), "mine")
        self.assertIsInstance(view.get(A), A)
        with self.assertRaisesRegex(FeatureWiringError, "feature 'mine' reads B without declaring it"):
            view.find(B)
        with self.assertRaisesRegex(KeyError, "no A"):
            FeatureServices().get(A)


class WiredHomeserverTestCase(FullHomeserverTestCase):
    def test_services_are_reached_by_type(self) -> None:
        features = self.hs.features
        self.assertIsInstance(features.get(TypingService), TypingService)
        self.assertIsInstance(features.get(DeviceListTracker), DeviceListTracker)

    def test_stores_are_built_once(self) -> None:
        dehydrated = self.hs.features.get(DehydratedDeviceService)
        self.assertIs(dehydrated._keys, self.hs.stores.e2e_keys)
        self.assertIs(dehydrated._inbox, self.hs.stores.to_device)
        to_device = self.hs.features.get(ToDeviceService)
        self.assertIs(to_device._store, self.hs.stores.to_device)
        self.assertIs(self.hs.rooms.events, self.hs.stores.events)
        self.assertIs(self.hs.features.get(UnreadCounter)._push_rules, self.hs.features.get(PushRulesService).evaluator)

    def test_a_feature_returning_an_undeclared_service_is_refused(self) -> None:
        async def wire(_hs: Any, _services: FeatureServices) -> Provided:
            return [B()]

        rogue = Feature("rogue", wire, provides=(A,))
        failure = self.get_failure(ensureDeferred(wire_features(self.hs, [rogue])), FeatureWiringError)
        self.assertIn("feature 'rogue' returned an undeclared B", str(failure.value))

    def test_one_rate_limiter_holds_the_feature_rules(self) -> None:
        self.assertEqual(self.hs.ratelimiter.rule(TYPING_ACTION).burst, 10)
        with self.assertRaisesRegex(ValueError, "already has a rule"):
            self.hs.ratelimiter.add_rules({TYPING_ACTION: self.hs.ratelimiter.rule(TYPING_ACTION)})
