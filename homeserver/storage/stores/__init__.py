"""Stores: one class per aggregate, each holding a ``DatabasePool`` (DESIGN 2.5).

:class:`Stores` is the container the composition root builds once per process (:func:`build_stores`)
and hands out: the core and every feature take their store from it, so each table has one owner
object. Stores are composed, never mixed in: a store that needs another receives it in its
constructor.
"""

from __future__ import annotations

import dataclasses

from homeserver.storage.ids import IdAllocator
from homeserver.storage.pool import DatabasePool
from homeserver.storage.stores.account_data import AccountDataStore
from homeserver.storage.stores.cross_signing import CrossSigningStore
from homeserver.storage.stores.devices import DeviceStore
from homeserver.storage.stores.e2e_keys import DeviceListStore, E2EKeyStore
from homeserver.storage.stores.events import EventStore
from homeserver.storage.stores.filters import FilterStore
from homeserver.storage.stores.key_backup import KeyBackupStore
from homeserver.storage.stores.login_tokens import LoginTokenStore
from homeserver.storage.stores.presence import PresenceStore
from homeserver.storage.stores.profiles import ProfileStore
from homeserver.storage.stores.push_rules import PushRuleStore
from homeserver.storage.stores.receipts import ReceiptStore
from homeserver.storage.stores.relations import RelationStore
from homeserver.storage.stores.room_directory import RoomDirectoryStore
from homeserver.storage.stores.rooms import RoomStore
from homeserver.storage.stores.search import SearchStore
from homeserver.storage.stores.state_groups import StateGroupStore
from homeserver.storage.stores.to_device import ToDeviceStore
from homeserver.storage.stores.ui_auth import UIAuthStore
from homeserver.storage.stores.users import UserStore
from homeserver.streams.writer import StreamWriter

__all__ = ["Stores", "build_stores"]


@dataclasses.dataclass(frozen=True)
class Stores:
    """Every store of one process, one instance each.

    (The media store and the dehydrated-device store live beside their packages, ``media/`` and
    ``homeserver.e2ee.dehydrated``, and are built once by their features.)
    """

    users: UserStore
    devices: DeviceStore
    ui_auth: UIAuthStore
    profiles: ProfileStore
    account_data: AccountDataStore
    filters: FilterStore
    login_tokens: LoginTokenStore
    room_directory: RoomDirectoryStore
    events: EventStore
    rooms: RoomStore
    state_groups: StateGroupStore
    e2e_keys: E2EKeyStore
    device_lists: DeviceListStore
    to_device: ToDeviceStore
    cross_signing: CrossSigningStore
    key_backup: KeyBackupStore
    receipts: ReceiptStore
    push_rules: PushRuleStore
    presence: PresenceStore
    relations: RelationStore
    search: SearchStore


def build_stores(pool: DatabasePool, receipts_stream: StreamWriter) -> Stores:
    """Builds every store once.

    Args:
        pool: the database pool.
        receipts_stream: the ``receipts`` stream writer (the receipt store allocates its ids).
    """
    group_ids = IdAllocator(pool.engine, "state_groups", "group_id", "state_group_id_seq")
    return Stores(
        users=UserStore(pool),
        devices=DeviceStore(pool),
        ui_auth=UIAuthStore(pool),
        profiles=ProfileStore(pool),
        account_data=AccountDataStore(pool),
        filters=FilterStore(pool),
        login_tokens=LoginTokenStore(pool),
        room_directory=RoomDirectoryStore(pool),
        events=EventStore(pool),
        rooms=RoomStore(pool),
        state_groups=StateGroupStore(pool, group_ids),
        e2e_keys=E2EKeyStore(pool),
        device_lists=DeviceListStore(pool),
        to_device=ToDeviceStore(pool),
        cross_signing=CrossSigningStore(pool),
        key_backup=KeyBackupStore(pool),
        receipts=ReceiptStore(pool, receipts_stream),
        push_rules=PushRuleStore(pool),
        presence=PresenceStore(pool),
        relations=RelationStore(pool),
        search=SearchStore(pool),
    )
