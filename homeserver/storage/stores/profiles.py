"""The ``profiles`` aggregate: a local user's display name and avatar URL.

A profile row is created with its account (:meth:`UserStore.create_user` calls
:meth:`ProfileStore.insert_profile_txn`); the writes below upsert
anyway, so an account whose row went missing heals on its next profile change.
"""

from __future__ import annotations

from dataclasses import dataclass

from homeserver.storage.pool import DatabasePool, Txn

DISPLAYNAME = "displayname"
AVATAR_URL = "avatar_url"
PROFILE_FIELDS = (DISPLAYNAME, AVATAR_URL)
"""The profile columns, named as the spec names the profile keys."""


@dataclass(frozen=True)
class ProfileRecord:
    """A local user's profile.

    Attributes:
        user_id: the owner.
        displayname: the display name, or None when unset.
        avatar_url: the ``mxc://`` avatar URL, or None when unset.
        deactivated: the owner's account is deactivated.
    """

    user_id: str
    displayname: str | None
    avatar_url: str | None
    deactivated: bool

    def to_json(self) -> dict[str, str]:
        """The spec's profile object: only the fields that are set."""
        body: dict[str, str] = {}
        if self.displayname is not None:
            body[DISPLAYNAME] = self.displayname
        if self.avatar_url is not None:
            body[AVATAR_URL] = self.avatar_url
        return body


def _upsert_field_txn(txn: Txn, user_id: str, field: str, value: str | None) -> None:
    if field not in PROFILE_FIELDS:
        raise ValueError(f"unknown profile field {field!r}")
    txn.execute(
        f"INSERT INTO profiles (user_id, {field}) VALUES (?, ?)"  # noqa: S608 - field is one of two names
        f" ON CONFLICT (user_id) DO UPDATE SET {field} = excluded.{field}",
        (user_id, value),
    )


class ProfileStore:
    """Reads and writes the ``profiles`` table.

    Args:
        pool: the database pool.
    """

    def __init__(self, pool: DatabasePool) -> None:
        self._pool = pool

    @staticmethod
    def insert_profile_txn(txn: Txn, user_id: str, displayname: str | None, avatar_url: str | None) -> None:
        """Creates a new account's profile row (called by :meth:`UserStore.create_user` in its transaction)."""
        txn.execute(
            "INSERT INTO profiles (user_id, displayname, avatar_url) VALUES (?, ?, ?)",
            (user_id, displayname, avatar_url),
        )

    async def get_profile(self, user_id: str) -> ProfileRecord | None:
        """Returns the profile of a local account, or None when there is no such account."""

        def get_profile_txn(txn: Txn) -> ProfileRecord | None:
            txn.execute(
                "SELECT u.user_id, p.displayname, p.avatar_url, u.deactivated FROM users AS u"
                " LEFT JOIN profiles AS p ON p.user_id = u.user_id WHERE u.user_id = ?",
                (user_id,),
            )
            row = txn.fetchone()
            if row is None:
                return None
            return ProfileRecord(
                user_id=str(row[0]),
                displayname=None if row[1] is None else str(row[1]),
                avatar_url=None if row[2] is None else str(row[2]),
                deactivated=bool(row[3]),
            )

        return await self._pool.run_read("get_profile", get_profile_txn)

    async def set_field(self, user_id: str, field: str, value: str | None) -> None:
        """Sets (or with None clears) ``displayname`` or ``avatar_url``.

        Raises:
            ValueError: ``field`` is not a profile field (a programming error).
        """
        if field not in PROFILE_FIELDS:
            raise ValueError(f"unknown profile field {field!r}")
        await self._pool.run_txn("set_profile_field", _upsert_field_txn, user_id, field, value)

    async def clear_profile(self, user_id: str) -> None:
        """Removes the display name and avatar (account deactivation)."""
        await self._pool.run_txn(
            "clear_profile",
            lambda txn: txn.execute(
                "UPDATE profiles SET displayname = NULL, avatar_url = NULL WHERE user_id = ?", (user_id,)
            ),
        )
