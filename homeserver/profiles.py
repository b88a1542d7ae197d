"""Profile lookups (spec client-server-api, "Profiles"): local users from the store, others through a port.

A local user's profile comes from :class:`~homeserver.storage.stores.profiles.ProfileStore` (404 for
unknown or deactivated users); another server's user is asked for through the
:class:`~homeserver.api.ports.RemoteProfileQuerier` port (ADR 0009; without federation: 404).
"""

from __future__ import annotations

from typing import Any

from homeserver.api.local import LocalOnlyProfileQuerier
from homeserver.api.ports import RemoteProfileQuerier
from homeserver.identity import LocalServer
from homeserver.storage.stores.profiles import ProfileStore
from sc_proto.errors import Codes, MatrixError
from sc_proto.identifiers import UserID

JsonDict = dict[str, Any]


class ProfileService:
    """Reads profiles of local and remote users.

    Args:
        server_name: our server name.
        profiles: the profile store.
        remote: queries other servers (local-only: 404).
    """

    def __init__(self, server_name: str, profiles: ProfileStore, remote: RemoteProfileQuerier | None = None) -> None:
        self._local = LocalServer(server_name)
        self._profiles = profiles
        self._remote: RemoteProfileQuerier = remote or LocalOnlyProfileQuerier()

    async def get_profile(self, user_id: UserID) -> JsonDict:
        """The user's whole profile (``displayname``, ``avatar_url`` when set).

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` for an unknown or deactivated user; a remote server's error.
        """
        if not self._local.is_mine(user_id):
            return dict(await self._remote.get_profile(str(user_id)))
        profile = await self._profiles.get_profile(str(user_id))
        if profile is None or profile.deactivated:
            raise MatrixError(404, Codes.NOT_FOUND, "Profile not found")
        return dict(profile.to_json())

    async def get_field(self, user_id: UserID, field: str) -> Any:
        """One profile field's value.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` when the user is unknown or the field is not set.
        """
        if not self._local.is_mine(user_id):
            value = (await self._remote.get_profile(str(user_id), field)).get(field)
        else:
            value = (await self.get_profile(user_id)).get(field)
        if value is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"No {field} set")
        return value


class LocalProfileReader:
    """Our users' profiles for the federation profile query (satisfies ``ProfileAPI``).

    Args:
        server_name: our server name.
        profiles: the profile store.
    """

    def __init__(self, server_name: str, profiles: ProfileStore) -> None:
        self._local = LocalServer(server_name)
        self._profiles = profiles

    async def get_local_profile(self, user_id: str) -> JsonDict | None:
        """The public profile of one of our users; None when unknown, deactivated or not ours."""
        if not self._local.is_mine(user_id):
            return None
        profile = await self._profiles.get_profile(user_id)
        if profile is None or profile.deactivated:
            return None
        return dict(profile.to_json())
