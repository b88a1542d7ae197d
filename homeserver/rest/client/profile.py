"""Profiles (spec client-server-api, "Profiles"): display name and avatar URL.

* ``GET /_matrix/client/v3/profile/{userId}``
* ``GET/PUT/DELETE /_matrix/client/v3/profile/{userId}/displayname``
* ``GET/PUT/DELETE /_matrix/client/v3/profile/{userId}/avatar_url``

Lookups need no access token (the spec lets servers serve any profile to anyone). Only the owner
may change a profile. Other profile keys (``m.tz``, custom fields, spec v1.16) are not supported yet.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.web.server import Request

from homeserver.http.auth import Authenticator
from homeserver.http.params import parse_path_user_id
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import parse_json_object_from_request
from homeserver.identity import LocalServer
from homeserver.profiles import ProfileService
from homeserver.rest.client.account_data import require_own_user
from homeserver.rest.client.login import client_paths
from homeserver.storage.stores.profiles import AVATAR_URL, DISPLAYNAME, ProfileStore
from sc_proto.errors import Codes, InvalidIdentifierError, MatrixError
from sc_proto.media.mxc import parse_mxc

logger = logging.getLogger(__name__)

MAX_DISPLAYNAME_LENGTH = 256
"""Longest display name accepted, in characters (NOTSPEC: the spec only bounds the whole profile)."""

MAX_AVATAR_URL_LENGTH = 1024
"""Longest avatar URL accepted (an ``mxc://`` URI is far shorter)."""




def _check_value(field: str, value: Any) -> str | None:
    """Validates a new ``displayname``/``avatar_url``; returns the value to store (None = unset)."""
    if not isinstance(value, str):
        # The spec lets servers reject null; DELETE removes a field.
        raise MatrixError(400, Codes.INVALID_PARAM, f"'{field}' must be a string")
    if field == DISPLAYNAME:
        if len(value) > MAX_DISPLAYNAME_LENGTH:
            raise MatrixError(400, Codes.INVALID_PARAM, f"'displayname' is longer than {MAX_DISPLAYNAME_LENGTH} characters")
        return value or None
    if value == "":
        return None  # clients clear the avatar by setting an empty URL
    if len(value) > MAX_AVATAR_URL_LENGTH:
        raise MatrixError(400, Codes.INVALID_PARAM, "'avatar_url' is too long")
    try:
        parse_mxc(value)
    except InvalidIdentifierError:
        raise MatrixError(400, Codes.INVALID_PARAM, "'avatar_url' must be an mxc:// URI") from None
    return value


class ProfileServlets:
    """Registers the profile endpoints.

    Args:
        server_name: our server name.
        authenticator: authenticates changes.
        profiles: the profiles store (changes).
        on_profile_changed: called after a change (member events in the user's rooms).
        lookups: reads local and remote profiles (a local-only one over ``profiles`` when not given).
    """

    def __init__(
        self,
        server_name: str,
        authenticator: Authenticator,
        profiles: ProfileStore,
        on_profile_changed: Callable[[str], Awaitable[None]] | None = None,
        lookups: ProfileService | None = None,
    ) -> None:
        self._server_name = server_name
        self._local = LocalServer(server_name)
        self._auth = authenticator
        self._profiles = profiles
        self._on_changed = on_profile_changed
        self._lookups = lookups or ProfileService(server_name, profiles)

    async def _changed(self, user_id: str) -> None:
        """Sends the new profile into the user's rooms (spec: servers update m.room.member events)."""
        if self._on_changed is not None:
            await self._on_changed(user_id)

    def register(self, resource: JsonResource) -> None:
        resource.register("GET", client_paths("/profile/{userId}"), self.on_get_profile)
        for field in (DISPLAYNAME, AVATAR_URL):
            path = client_paths(f"/profile/{{userId}}/{field}")
            resource.register("GET", path, self._getter(field))
            resource.register("PUT", path, self._setter(field))
            resource.register("DELETE", path, self._deleter(field))

    async def on_get_profile(self, request: Request, user_id: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v3/profile/{userId}"""
        return 200, await self._lookups.get_profile(parse_path_user_id(user_id))

    def _getter(self, field: str) -> Any:
        async def on_get_field(request: Request, user_id: str) -> tuple[int, JsonDict]:
            """GET /_matrix/client/v3/profile/{userId}/{field}

            404 when the user is unknown or the field is not set (spec v1.16).
            """
            return 200, {field: await self._lookups.get_field(parse_path_user_id(user_id), field)}

        return on_get_field

    def _setter(self, field: str) -> Any:
        async def on_put_field(request: Request, user_id: str) -> tuple[int, JsonDict]:
            """PUT /_matrix/client/v3/profile/{userId}/{field}"""
            requester = await self._auth.get_requester(request)
            require_own_user(requester.user_id, user_id, "change the profile of")
            body = parse_json_object_from_request(request)
            if field not in body:
                raise MatrixError(400, Codes.MISSING_PARAM, f"Missing '{field}'")
            value = _check_value(field, body[field])
            await self._profiles.set_field(requester.user_id, field, value)
            await self._changed(requester.user_id)
            logger.info("profile %s changed", field, extra={"user_id": requester.user_id})
            return 200, {}

        return on_put_field

    def _deleter(self, field: str) -> Any:
        async def on_delete_field(request: Request, user_id: str) -> tuple[int, JsonDict]:
            """DELETE /_matrix/client/v3/profile/{userId}/{field} (spec v1.16)"""
            requester = await self._auth.get_requester(request)
            require_own_user(requester.user_id, user_id, "change the profile of")
            await self._profiles.set_field(requester.user_id, field, None)
            await self._changed(requester.user_id)
            return 200, {}

        return on_delete_field
