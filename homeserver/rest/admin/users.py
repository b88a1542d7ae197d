"""User administration: accounts, passwords, locks, deactivation, devices and sessions (issue 3).

The shapes follow Synapse's ``/_synapse/admin`` API, so existing admin tools (synapse-admin, synadm)
work; see ``docs/admin_api.md``. Two endpoints are also served at their spec paths:
``GET /_matrix/client/v3/admin/whois/{userId}`` and ``GET/PUT /_matrix/client/v1/admin/lock/{userId}``.

* ``GET /_synapse/admin/v2/users`` · ``GET/PUT /_synapse/admin/v2/users/{userId}``
* ``POST /_synapse/admin/v1/deactivate/{userId}`` · ``POST /_synapse/admin/v1/reset_password/{userId}``
* ``GET /_synapse/admin/v2/users/{userId}/devices`` · ``POST .../delete_devices`` ·
  ``GET/DELETE .../devices/{deviceId}``
* ``GET /_synapse/admin/v1/whois/{userId}``

Theory of operation:

* Every handler authenticates first and checks the admin flag before it looks at the target, so a
  non-admin learns nothing about which accounts exist (403 ``M_FORBIDDEN`` for every target).
* Only local users can be administered; a remote user ID is a 400.
* The administrative lock is ``users.locked``; it makes every access token of the account answer
  401 ``M_USER_LOCKED`` (spec "Account locking"). It is unrelated to the failed-login lockout
  (``users.locked_until_ts``), which only refuses new password logins: failing logins must never be
  able to lock someone out of the sessions they already have.
* Every change an admin makes is logged at INFO with ``admin_user_id`` and ``target_user_id``;
  passwords never are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from twisted.web.server import Request

from homeserver.auth.accounts import AccountService, NewAccount
from homeserver.auth.sessions import SessionService
from homeserver.http.auth import Authenticator, Requester
from homeserver.http.params import parse_local_path_user_id
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import (
    optional_bool,
    optional_str,
    parse_boolean,
    parse_integer,
    parse_json_object_from_request,
    parse_string,
    require_bool,
    require_str,
    require_str_list,
)
from homeserver.identity import LocalServer
from homeserver.storage.stores.devices import DeviceRecord, DeviceStore
from homeserver.storage.stores.profiles import ProfileStore
from homeserver.storage.stores.users import ADMIN_USER_ORDERS, AdminUserQuery, AdminUserView, UserStore
from sc_proto.errors import Codes, MatrixError

logger = logging.getLogger(__name__)

ADMIN_PREFIX = "/_synapse/admin"
NOT_ADMIN_MESSAGE = "You are not a server admin"
MAX_LIST_LIMIT = 1000
"""Largest page the user list returns; larger ``limit`` values are clamped to it."""
MAX_PASSWORD_LENGTH = 512
MAX_DISPLAYNAME_LENGTH = 256
MAX_AVATAR_URL_LENGTH = 1000
MAX_FILTER_LENGTH = 255
MAX_DELETE_DEVICES = 1000


async def require_admin(auth: Authenticator, request: Request) -> Requester:
    """Authenticates the request and insists on a server admin.

    Raises:
        MatrixError: 401 without a valid token; 403 ``M_FORBIDDEN`` for non-admins.
    """
    requester = await auth.get_requester(request)
    if not requester.is_admin:
        raise MatrixError(403, Codes.FORBIDDEN, NOT_ADMIN_MESSAGE)
    return requester


def parse_local_user_id(user_id: str, server_name: str) -> str:
    """Validates a path user ID and checks that it is one of ours.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` for a malformed or remote user ID.
    """
    return str(parse_local_path_user_id(user_id, LocalServer(server_name)))


def _user_not_found() -> MatrixError:
    return MatrixError(404, Codes.NOT_FOUND, "User not found")


def _bounded_str(body: dict[str, Any], key: str, max_length: int) -> str | None:
    value = optional_str(body, key)
    if value is not None and len(value) > max_length:
        raise MatrixError(400, Codes.INVALID_PARAM, f"'{key}' is longer than {max_length} characters")
    return value


def user_to_json(view: AdminUserView, *, full: bool = False) -> JsonDict:
    """Renders an account in Synapse's shape (``full`` adds the single-user fields)."""
    body: JsonDict = {
        "name": view.user_id,
        "user_type": None,
        "is_guest": view.is_guest,
        "admin": view.is_admin,
        "deactivated": view.deactivated,
        "locked": view.locked,
        "shadow_banned": False,
        "erased": False,
        "creation_ts": view.created_ts,
        "displayname": view.displayname,
        "avatar_url": view.avatar_url,
    }
    if full:
        body.update({"threepids": [], "external_ids": [], "appservice_id": None})
    return body


def device_to_json(device: DeviceRecord) -> JsonDict:
    """Renders a device in Synapse's admin shape (with the last-seen fields, audit AUTH-6)."""
    return {
        "user_id": device.user_id,
        "device_id": device.device_id,
        "display_name": device.display_name,
        "last_seen_ip": device.last_seen_ip,
        "last_seen_ts": device.last_seen_ts,
        "last_seen_user_agent": device.last_seen_user_agent,
    }


def whois_to_json(user_id: str, devices: list[DeviceRecord]) -> JsonDict:
    """The spec's whois shape: one session per device, with its last connection if it was seen."""
    result: dict[str, JsonDict] = {}
    for device in devices:
        connections: list[JsonDict] = []
        if device.last_seen_ts is not None:
            connection: JsonDict = {"last_seen": device.last_seen_ts}
            if device.last_seen_ip is not None:
                connection["ip"] = device.last_seen_ip
            if device.last_seen_user_agent is not None:
                connection["user_agent"] = device.last_seen_user_agent
            connections.append(connection)
        result[device.device_id] = {"sessions": [{"connections": connections}]}
    return {"user_id": user_id, "devices": result}


@dataclass(frozen=True)
class UserUpdate:
    """The parsed body of ``PUT /_synapse/admin/v2/users/{userId}`` (None = leave unchanged)."""

    password: str | None = None
    logout_devices: bool = True
    displayname: str | None = None
    avatar_url: str | None = None
    admin: bool | None = None
    deactivated: bool | None = None
    locked: bool | None = None

    @classmethod
    def parse(cls, body: dict[str, Any]) -> UserUpdate:
        """Reads the fields we support; Synapse-only fields (``threepids``...) are ignored.

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` for a field of the wrong type or too long.
        """
        logout = optional_bool(body, "logout_devices", True)
        return cls(
            password=_bounded_str(body, "password", MAX_PASSWORD_LENGTH),
            logout_devices=True if logout is None else logout,
            displayname=_bounded_str(body, "displayname", MAX_DISPLAYNAME_LENGTH),
            avatar_url=_bounded_str(body, "avatar_url", MAX_AVATAR_URL_LENGTH),
            admin=optional_bool(body, "admin"),
            deactivated=optional_bool(body, "deactivated"),
            locked=optional_bool(body, "locked"),
        )

    def profile_fields(self) -> dict[str, str | None]:
        fields: dict[str, str | None] = {}
        if self.displayname is not None:
            fields["displayname"] = self.displayname
        if self.avatar_url is not None:
            fields["avatar_url"] = self.avatar_url
        return fields


class AdminUserServlets:
    """Registers the user-administration endpoints.

    Args:
        server_name: our server name.
        accounts: creates, deactivates accounts and changes passwords.
        users: the users store.
        devices: the devices store.
        profiles: the profiles store.
        sessions: the session service (ending sessions).
        authenticator: authenticates requests.
    """

    def __init__(
        self,
        server_name: str,
        accounts: AccountService,
        users: UserStore,
        devices: DeviceStore,
        profiles: ProfileStore,
        sessions: SessionService,
        authenticator: Authenticator,
    ) -> None:
        self._accounts = accounts
        self._server_name = server_name
        self._users = users
        self._devices = devices
        self._profiles = profiles
        self._sessions = sessions
        self._auth = authenticator

    def register(self, resource: JsonResource) -> None:
        """Adds every endpoint to ``resource``."""
        users_v2 = f"{ADMIN_PREFIX}/v2/users"
        one_user = f"{users_v2}/{{userId}}"
        resource.register("GET", users_v2, self.on_list_users)
        resource.register("GET", one_user, self.on_get_user)
        resource.register("PUT", one_user, self.on_put_user)
        resource.register("POST", f"{ADMIN_PREFIX}/v1/deactivate/{{userId}}", self.on_deactivate)
        resource.register("POST", f"{ADMIN_PREFIX}/v1/reset_password/{{userId}}", self.on_reset_password)
        resource.register("GET", f"{one_user}/devices", self.on_get_devices)
        resource.register("POST", f"{one_user}/delete_devices", self.on_delete_devices)
        resource.register("GET", f"{one_user}/devices/{{deviceId}}", self.on_get_device)
        resource.register("DELETE", f"{one_user}/devices/{{deviceId}}", self.on_delete_device)
        whois_paths = [
            f"{ADMIN_PREFIX}/v1/whois/{{userId}}",
            "/_matrix/client/r0/admin/whois/{userId}",
            "/_matrix/client/v3/admin/whois/{userId}",
        ]
        resource.register("GET", whois_paths, self.on_whois)
        resource.register("GET", "/_matrix/client/v1/admin/lock/{userId}", self.on_get_lock)
        resource.register("PUT", "/_matrix/client/v1/admin/lock/{userId}", self.on_put_lock)

    # ------------------------------------------------------------------ helpers

    async def _existing_user(self, user_id: str) -> AdminUserView:
        view = await self._users.get_user_admin_view(user_id)
        if view is None:
            raise _user_not_found()
        return view

    async def _set_profile(self, user_id: str, fields: dict[str, str | None]) -> None:
        # Rooms do not exist yet, so no m.room.member events are re-sent with the new profile.
        for name, value in sorted(fields.items()):
            await self._profiles.set_field(user_id, name, value)

    def _audit(self, action: str, requester: Requester, target: str, **fields: object) -> None:
        logger.info(
            "admin %s", action, extra={"admin_user_id": requester.user_id, "target_user_id": target, **fields}
        )

    # ------------------------------------------------------------------ accounts

    async def on_list_users(self, request: Request) -> tuple[int, JsonDict]:
        """GET /_synapse/admin/v2/users"""
        await require_admin(self._auth, request)
        offset = parse_integer(request, "from", default=0, minimum=0)
        limit = min(parse_integer(request, "limit", default=100, minimum=0), MAX_LIST_LIMIT)
        name = parse_string(request, "name")
        user_id = parse_string(request, "user_id")
        for key, value in (("name", name), ("user_id", user_id)):
            if value is not None and len(value) > MAX_FILTER_LENGTH:
                raise MatrixError(400, Codes.INVALID_PARAM, f"Query parameter {key!r} is too long")
        query = AdminUserQuery(
            offset=offset,
            limit=limit,
            domain=self._server_name,
            name=name,
            user_id_contains=user_id,
            guests=parse_boolean(request, "guests", default=True),
            deactivated=parse_boolean(request, "deactivated", default=False),
            admins=parse_boolean(request, "admins"),
            locked=parse_boolean(request, "locked", default=False),
            order_by=parse_string(request, "order_by", default="name", allowed_values=ADMIN_USER_ORDERS),
            descending=parse_string(request, "dir", default="f", allowed_values=("f", "b")) == "b",
        )
        views, total = await self._users.list_users_admin(query)
        body: JsonDict = {"users": [user_to_json(v) for v in views], "total": total}
        if offset + len(views) < total and views:
            body["next_token"] = str(offset + len(views))
        return 200, body

    async def on_get_user(self, request: Request, user_id: str) -> tuple[int, JsonDict]:
        """GET /_synapse/admin/v2/users/{userId}"""
        await require_admin(self._auth, request)
        target = parse_local_user_id(user_id, self._server_name)
        return 200, user_to_json(await self._existing_user(target), full=True)

    async def on_put_user(self, request: Request, user_id: str) -> tuple[int, JsonDict]:
        """PUT /_synapse/admin/v2/users/{userId}

        Creates the account (201) or changes it (200); answers with the account either way.
        """
        requester = await require_admin(self._auth, request)
        target = parse_local_user_id(user_id, self._server_name)
        update = UserUpdate.parse(parse_json_object_from_request(request))
        existing = await self._users.get_user_admin_view(target)
        if existing is None:
            await self._create_user(requester, target, update)
            status = 201
        else:
            await self._modify_user(requester, existing, update)
            status = 200
        return status, user_to_json(await self._existing_user(target), full=True)

    async def _create_user(self, requester: Requester, target: str, update: UserUpdate) -> None:
        # Like Synapse, the password policy does not bind admins: they may set any password.
        account = NewAccount(
            self._accounts.requested_localpart(target),
            update.password,
            admin=bool(update.admin),
            displayname=update.displayname,
            avatar_url=update.avatar_url,
            enforce_password_policy=False,
        )
        await self._accounts.create_account(account)
        self._audit("created user", requester, target, admin=bool(update.admin))
        if update.locked:
            await self._users.set_admin_lock(target, True)
            self._audit("locked user", requester, target)
        if update.deactivated:
            await self._deactivate(requester, target)

    async def _modify_user(self, requester: Requester, existing: AdminUserView, update: UserUpdate) -> None:
        target = existing.user_id
        if update.admin is False and target == requester.user_id:
            raise MatrixError(400, Codes.INVALID_PARAM, "You may not demote yourself")
        if update.locked is True and target == requester.user_id:
            raise MatrixError(400, Codes.INVALID_PARAM, "You may not lock yourself")
        reactivate = update.deactivated is False and existing.deactivated
        if reactivate and update.password is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Must provide a password to re-activate an account")
        if reactivate:
            await self._users.set_deactivated(target, False)
            self._audit("reactivated user", requester, target)
        if update.password is not None and not update.deactivated:
            await self._set_password(requester, target, update.password, update.logout_devices)
        fields = update.profile_fields()
        if fields:
            await self._set_profile(target, fields)
            self._audit("changed profile", requester, target, fields=sorted(fields))
        if update.admin is not None and update.admin != existing.is_admin:
            await self._users.set_admin(target, update.admin)
            self._audit("changed admin flag", requester, target, admin=update.admin)
        if update.locked is not None and update.locked != existing.locked:
            await self._users.set_admin_lock(target, update.locked)
            self._audit("locked user" if update.locked else "unlocked user", requester, target)
        if update.deactivated is True and not existing.deactivated:
            await self._deactivate(requester, target)

    async def _set_password(self, requester: Requester, target: str, password: str, logout_devices: bool) -> None:
        # Like Synapse, the password policy does not bind admins: they may set any password.
        # An admin changing their own password keeps the session they are using.
        keep = requester.device_id if target == requester.user_id else None
        ended = await self._accounts.change_password(target, password, logout_devices=logout_devices, keep_device_id=keep)
        self._audit("set password", requester, target, sessions_ended=len(ended))

    async def _deactivate(self, requester: Requester, target: str, *, erase: bool = False) -> None:
        ended = await self._accounts.deactivate(target, erase=erase)
        self._audit("deactivated user", requester, target, sessions_ended=len(ended), erase=erase)

    async def on_deactivate(self, request: Request, user_id: str) -> tuple[int, JsonDict]:
        """POST /_synapse/admin/v1/deactivate/{userId}

        The same deactivation as the client's ``/account/deactivate`` (sessions end, rooms are left,
        the profile is cleared); ``erase: true`` deletes the account data too.
        """
        requester = await require_admin(self._auth, request)
        target = parse_local_user_id(user_id, self._server_name)
        body = parse_json_object_from_request(request, allow_empty=True)
        erase = optional_bool(body, "erase", False)
        await self._existing_user(target)
        await self._deactivate(requester, target, erase=bool(erase))
        return 200, {"id_server_unbind_result": "success"}

    async def on_reset_password(self, request: Request, user_id: str) -> tuple[int, JsonDict]:
        """POST /_synapse/admin/v1/reset_password/{userId}"""
        requester = await require_admin(self._auth, request)
        target = parse_local_user_id(user_id, self._server_name)
        body = parse_json_object_from_request(request)
        password = require_str(body, "new_password")
        if len(password) > MAX_PASSWORD_LENGTH:
            raise MatrixError(400, Codes.INVALID_PARAM, f"'new_password' is longer than {MAX_PASSWORD_LENGTH} chars")
        logout = optional_bool(body, "logout_devices", True)
        view = await self._existing_user(target)
        if view.deactivated:
            raise MatrixError(400, Codes.INVALID_PARAM, "The account is deactivated; re-activate it instead")
        await self._set_password(requester, target, password, True if logout is None else logout)
        return 200, {}

    # ------------------------------------------------------------------ devices and sessions

    async def on_get_devices(self, request: Request, user_id: str) -> tuple[int, JsonDict]:
        """GET /_synapse/admin/v2/users/{userId}/devices"""
        await require_admin(self._auth, request)
        target = parse_local_user_id(user_id, self._server_name)
        await self._existing_user(target)
        devices = await self._devices.get_devices(target)
        return 200, {"devices": [device_to_json(d) for d in devices], "total": len(devices)}

    async def on_get_device(self, request: Request, user_id: str, device_id: str) -> tuple[int, JsonDict]:
        """GET /_synapse/admin/v2/users/{userId}/devices/{deviceId}"""
        await require_admin(self._auth, request)
        target = parse_local_user_id(user_id, self._server_name)
        await self._existing_user(target)
        device = await self._devices.get_device(target, device_id)
        if device is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Device not found")
        return 200, device_to_json(device)

    async def on_delete_device(self, request: Request, user_id: str, device_id: str) -> tuple[int, JsonDict]:
        """DELETE /_synapse/admin/v2/users/{userId}/devices/{deviceId}

        Ends that session (device and tokens). An unknown device is not an error, as in Synapse.
        """
        requester = await require_admin(self._auth, request)
        target = parse_local_user_id(user_id, self._server_name)
        await self._existing_user(target)
        await self._sessions.end_device_sessions(target, [device_id])
        self._audit("deleted device", requester, target, device_id=device_id)
        return 200, {}

    async def on_delete_devices(self, request: Request, user_id: str) -> tuple[int, JsonDict]:
        """POST /_synapse/admin/v2/users/{userId}/delete_devices"""
        requester = await require_admin(self._auth, request)
        target = parse_local_user_id(user_id, self._server_name)
        device_ids = require_str_list(parse_json_object_from_request(request), "devices")
        if len(device_ids) > MAX_DELETE_DEVICES:
            raise MatrixError(400, Codes.INVALID_PARAM, f"At most {MAX_DELETE_DEVICES} devices at a time")
        await self._existing_user(target)
        await self._sessions.end_device_sessions(target, device_ids)
        self._audit("deleted devices", requester, target, count=len(device_ids))
        return 200, {}

    async def on_whois(self, request: Request, user_id: str) -> tuple[int, JsonDict]:
        """GET /_synapse/admin/v1/whois/{userId} (and the spec's /_matrix/client/v3/admin/whois/{userId})

        Admins may look anyone up; everyone may look themselves up (the spec allows both).
        """
        requester = await self._auth.get_requester(request)
        if not requester.is_admin and user_id != requester.user_id:
            raise MatrixError(403, Codes.FORBIDDEN, NOT_ADMIN_MESSAGE)
        target = parse_local_user_id(user_id, self._server_name)
        await self._existing_user(target)
        return 200, whois_to_json(target, await self._devices.get_devices(target))

    # ------------------------------------------------------------------ spec lock endpoints

    async def _lock_target(self, request: Request, user_id: str) -> tuple[Requester, AdminUserView]:
        requester = await require_admin(self._auth, request)
        target = parse_local_user_id(user_id, self._server_name)
        view = await self._users.get_user_admin_view(target)
        if view is None or view.deactivated:
            raise _user_not_found()
        if view.is_admin and target != requester.user_id:
            raise MatrixError(403, Codes.FORBIDDEN, "The target user is a server administrator")
        return requester, view

    async def on_get_lock(self, request: Request, user_id: str) -> tuple[int, JsonDict]:
        """GET /_matrix/client/v1/admin/lock/{userId}"""
        _, view = await self._lock_target(request, user_id)
        return 200, {"locked": view.locked}

    async def on_put_lock(self, request: Request, user_id: str) -> tuple[int, JsonDict]:
        """PUT /_matrix/client/v1/admin/lock/{userId}"""
        requester, view = await self._lock_target(request, user_id)
        locked = require_bool(parse_json_object_from_request(request), "locked")
        if view.user_id == requester.user_id:
            raise MatrixError(403, Codes.FORBIDDEN, "You may not lock your own account")
        if locked != view.locked:
            await self._users.set_admin_lock(view.user_id, locked)
            self._audit("locked user" if locked else "unlocked user", requester, view.user_id)
        return 200, {"locked": locked}
