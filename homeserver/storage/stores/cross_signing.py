"""The cross-signing aggregate: users' cross-signing keys and the signatures uploaded for keys.

Theory of operation: ``e2e_cross_signing_keys`` holds each user's *current* master, self-signing and
user-signing key (one row per usage; an upload replaces the row). Signatures uploaded through
``/keys/signatures/upload`` live in ``e2e_cross_signing_signatures``, apart from the keys they sign, and
are merged into ``/keys/query`` answers. Replacing a key drops the signatures it can no longer carry in
the same transaction: signatures *made by* the old key, and, for a master key, signatures *of* it.

Writers may pass ``on_changed_txn(txn, user_id)``; it runs inside the write transaction for every user
whose keys changed, so a device-list change is recorded atomically with the write.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.storage.pool import DatabasePool, Txn
from sc_proto.json import encode_canonical_json

ChangedHook = Callable[[Txn, str], None]
"""Called inside a write transaction with each user whose cross-signing data changed."""


@dataclass(frozen=True)
class StoredSignature:
    """One uploaded signature.

    Attributes:
        signer_user_id: who signed.
        signer_key_id: the signing key (``ed25519:<public key or device ID>``).
        target_user_id: the owner of the signed key.
        target_key_id: the signed key: a device ID or a master public key.
        signature: unpadded Base64 signature.
    """

    signer_user_id: str
    signer_key_id: str
    target_user_id: str
    target_key_id: str
    signature: str


def _decode(text: object) -> dict[str, Any]:
    value = json.loads(str(text))
    return value if isinstance(value, dict) else {}


class CrossSigningStore:
    """Reads and writes cross-signing keys and signatures.

    Args:
        pool: the database pool.
    """

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool

    async def get_keys(self, user_ids: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """Returns ``{user_id: {key_type: key_json}}`` for the users that have keys."""

        def get_keys_txn(txn: Txn) -> dict[str, dict[str, dict[str, Any]]]:
            return self.get_keys_txn(txn, user_ids)

        return await self._pool.run_read("get_cross_signing_keys", get_keys_txn)

    def get_keys_txn(self, txn: Txn, user_ids: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """:meth:`get_keys` inside the caller's transaction."""
        found: dict[str, dict[str, dict[str, Any]]] = {}
        for fragment, args in txn.engine.in_list_batches("user_id", list(dict.fromkeys(user_ids))):
            txn.execute(
                f"SELECT user_id, key_type, key_json FROM e2e_cross_signing_keys WHERE {fragment}",  # noqa: S608
                args,
            )
            for user_id, key_type, key_json in txn.fetchall():
                found.setdefault(str(user_id), {})[str(key_type)] = _decode(key_json)
        return found

    async def set_keys(
        self,
        user_id: str,
        keys: Mapping[str, tuple[str, Mapping[str, Any]]],
        now_ms: int,
        on_changed_txn: ChangedHook | None = None,
    ) -> None:
        """Stores (replaces) some of a user's cross-signing keys in one transaction.

        Args:
            user_id: the owner.
            keys: ``{key_type: (public_key, key_json)}``.
            now_ms: the time of the upload.
            on_changed_txn: run inside the transaction once, with ``user_id``.
        """
        encoded = {t: (pk, encode_canonical_json(dict(js)).decode("utf-8")) for t, (pk, js) in keys.items()}

        def set_keys_txn(txn: Txn) -> None:
            for key_type, (public_key, key_json) in sorted(encoded.items()):
                txn.execute(
                    "SELECT public_key FROM e2e_cross_signing_keys WHERE user_id = ? AND key_type = ?",
                    (user_id, key_type),
                )
                row = txn.fetchone()
                if row is not None and row[0] != public_key:
                    self._drop_signatures_of_replaced_key_txn(txn, user_id, key_type, str(row[0]))
                txn.execute(
                    "INSERT INTO e2e_cross_signing_keys (user_id, key_type, public_key, key_json, updated_ts)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, key_type) DO UPDATE SET"
                    " public_key = excluded.public_key, key_json = excluded.key_json,"
                    " updated_ts = excluded.updated_ts",
                    (user_id, key_type, public_key, key_json, now_ms),
                )
            if on_changed_txn is not None:
                on_changed_txn(txn, user_id)

        await self._pool.run_txn("set_cross_signing_keys", set_keys_txn)

    @staticmethod
    def _drop_signatures_of_replaced_key_txn(txn: Txn, user_id: str, key_type: str, old_public_key: str) -> None:
        txn.execute(
            "DELETE FROM e2e_cross_signing_signatures WHERE signer_user_id = ? AND signer_key_id = ?",
            (user_id, f"ed25519:{old_public_key}"),
        )
        if key_type == "master":
            txn.execute(
                "DELETE FROM e2e_cross_signing_signatures WHERE target_user_id = ? AND target_key_id = ?",
                (user_id, old_public_key),
            )

    async def add_signatures(
        self, signatures: Sequence[StoredSignature], on_changed_txn: ChangedHook | None = None
    ) -> None:
        """Stores signatures (a signature by the same key of the same target is replaced).

        Args:
            signatures: the verified signatures.
            on_changed_txn: run inside the transaction once per distinct target user.
        """
        if not signatures:
            return
        rows = [
            (s.target_user_id, s.target_key_id, s.signer_user_id, s.signer_key_id, s.signature) for s in signatures
        ]

        def add_signatures_txn(txn: Txn) -> None:
            txn.execute_many(
                "INSERT INTO e2e_cross_signing_signatures"
                " (target_user_id, target_key_id, signer_user_id, signer_key_id, signature) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)"
                " DO UPDATE SET signature = excluded.signature",
                rows,
            )
            if on_changed_txn is not None:
                for user_id in sorted({s.target_user_id for s in signatures}):
                    on_changed_txn(txn, user_id)

        await self._pool.run_txn("add_cross_signing_signatures", add_signatures_txn)

    @staticmethod
    def delete_device_signatures_txn(txn: Txn, user_id: str, device_ids: Sequence[str]) -> None:
        """Drops signatures of deleted devices and by them (run in the device-deletion transaction)."""
        for device_id in device_ids:
            txn.execute(
                "DELETE FROM e2e_cross_signing_signatures WHERE target_user_id = ? AND target_key_id = ?",
                (user_id, device_id),
            )
            txn.execute(
                "DELETE FROM e2e_cross_signing_signatures WHERE signer_user_id = ? AND signer_key_id = ?",
                (user_id, f"ed25519:{device_id}"),
            )

    async def get_signatures_for(self, target_user_ids: Iterable[str]) -> list[StoredSignature]:
        """Every stored signature of the keys (devices and master keys) of ``target_user_ids``."""
        users = list(dict.fromkeys(target_user_ids))

        def get_signatures_txn(txn: Txn) -> list[StoredSignature]:
            found: list[StoredSignature] = []
            for fragment, args in txn.engine.in_list_batches("target_user_id", users):
                sql = (
                    "SELECT signer_user_id, signer_key_id, target_user_id, target_key_id, signature"  # noqa: S608
                    " FROM e2e_cross_signing_signatures WHERE " + fragment
                )
                txn.execute(sql, args)
                found.extend(StoredSignature(*(str(v) for v in row)) for row in txn.fetchall())
            return found

        if not users:
            return []
        return await self._pool.run_read("get_cross_signing_signatures", get_signatures_txn)
