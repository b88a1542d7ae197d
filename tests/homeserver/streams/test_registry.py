"""Every stream is declared once (homeserver.streams.registry)."""

from __future__ import annotations

import unittest

from homeserver.push.sync_source import PushRulesSource
from homeserver.streams import registry
from homeserver.streams.registry import MAIN, IdSource, StreamSpec, check_unique
from homeserver.sync.sources.account_data import AccountDataSource
from homeserver.sync.sources.device_lists import DeviceListsSource
from homeserver.sync.sources.presence import PresenceSource
from homeserver.sync.sources.receipts import ReceiptsSource
from homeserver.sync.sources.room_events import RoomEventsSource
from homeserver.sync.sources.to_device import ToDeviceSource
from homeserver.sync.sources.typing import TypingSource


class RegistryTestCase(unittest.TestCase):
    def test_declarations_are_unique(self) -> None:
        check_unique(registry.STREAMS)  # also checked at import
        names = [s.name for s in registry.STREAMS]
        keys = [s.token_key for s in registry.STREAMS]
        sequences = [s.ids.sequence for s in registry.STREAMS if s.ids is not None and s.ids.sequence]
        self.assertEqual(len(names), len(set(names)))
        self.assertEqual(len(keys), len(set(keys)))
        self.assertEqual(len(sequences), len(set(sequences)))

    def test_duplicate_token_key_is_refused(self) -> None:
        clash = StreamSpec("other", registry.RECEIPTS.token_key, (MAIN,), None)
        with self.assertRaisesRegex(ValueError, "token key 'rc'"):
            check_unique((*registry.STREAMS, clash))

    def test_duplicate_sequence_is_refused(self) -> None:
        clash = StreamSpec("other", "zz", (MAIN,), IdSource("other_table", "stream_id", "receipts_stream_seq"))
        with self.assertRaisesRegex(ValueError, "sequence 'receipts_stream_seq'"):
            check_unique((*registry.STREAMS, clash))

    def test_every_sync_source_has_a_declared_stream(self) -> None:
        sources = [
            RoomEventsSource, AccountDataSource, ReceiptsSource, ToDeviceSource, DeviceListsSource,
            PresenceSource, PushRulesSource, TypingSource,
        ]
        self.assertEqual({s.name for s in sources}, {s.token_key for s in registry.STREAMS})

    def test_every_stream_has_a_writer(self) -> None:
        for spec in registry.STREAMS:
            self.assertEqual(spec.writers, (MAIN,), spec.name)

    def test_lookup_and_allocator_errors(self) -> None:
        self.assertIs(registry.by_name("to_device"), registry.TO_DEVICE)
        with self.assertRaises(KeyError):
            registry.by_name("nope")
        with self.assertRaisesRegex(ValueError, "typing"):
            registry.id_allocator(registry.TYPING, None)  # type: ignore[arg-type]  # never reached
