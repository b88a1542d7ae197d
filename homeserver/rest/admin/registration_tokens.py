"""Registration tokens (spec "Token-authenticated registration"), managed in Synapse's admin shapes.

* ``GET /_synapse/admin/v1/registration_tokens[?valid=true|false]``
* ``POST /_synapse/admin/v1/registration_tokens/new``
* ``GET/PUT/DELETE /_synapse/admin/v1/registration_tokens/{token}``

A token is ``[A-Za-z0-9._~-]{1,64}`` (spec). ``uses_allowed`` is a non-negative integer or null
(unlimited); ``expiry_time`` is milliseconds since the epoch or null (never).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from typing import Any

from twisted.web.server import Request

from homeserver.http.auth import Authenticator
from homeserver.http.server import JsonDict, JsonResource
from homeserver.http.servlet import (
    MAX_SAFE_INTEGER,
    optional_int,
    parse_boolean,
    parse_json_object_from_request,
)
from homeserver.rest.admin.users import ADMIN_PREFIX, require_admin
from homeserver.storage.stores.ui_auth import RegistrationTokenRecord, UIAuthStore
from sc_proto.errors import Codes, MatrixError

logger = logging.getLogger(__name__)

TOKEN_RE = re.compile(r"[A-Za-z0-9._~-]{1,64}")
"""The spec's grammar for registration tokens."""
_GENERATED_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-"
DEFAULT_GENERATED_LENGTH = 16


def token_to_json(record: RegistrationTokenRecord) -> JsonDict:
    """Synapse's token object."""
    return {
        "token": record.token,
        "uses_allowed": record.uses_allowed,
        "pending": record.pending,
        "completed": record.completed,
        "expiry_time": record.expiry_ts,
    }


def _nullable_int(body: dict[str, Any], key: str) -> int | None:
    """Reads a field that is a non-negative integer or null (absent reads as null)."""
    return optional_int(body, key, minimum=0, maximum=MAX_SAFE_INTEGER)


class RegistrationTokenServlets:
    """Registers the registration-token admin endpoints.

    Args:
        store: the store holding ``registration_tokens``.
        authenticator: authenticates requests.
        time_msec: the clock.
    """

    def __init__(self, store: UIAuthStore, authenticator: Authenticator, time_msec: Callable[[], int]) -> None:
        self._store = store
        self._auth = authenticator
        self._now = time_msec

    def register(self, resource: JsonResource) -> None:
        """Adds every endpoint to ``resource``."""
        base = f"{ADMIN_PREFIX}/v1/registration_tokens"
        resource.register("GET", base, self.on_list)
        resource.register("POST", f"{base}/new", self.on_create)
        one = f"{base}/{{token}}"
        resource.register("GET", one, self.on_get)
        resource.register("PUT", one, self.on_update)
        resource.register("DELETE", one, self.on_delete)

    async def _existing(self, token: str) -> RegistrationTokenRecord:
        record = await self._store.get_registration_token(token) if TOKEN_RE.fullmatch(token) else None
        if record is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No such registration token")
        return record

    async def on_list(self, request: Request) -> tuple[int, JsonDict]:
        """GET /_synapse/admin/v1/registration_tokens"""
        await require_admin(self._auth, request)
        valid = parse_boolean(request, "valid")
        records = await self._store.list_registration_tokens(valid, self._now())
        return 200, {"registration_tokens": [token_to_json(r) for r in records]}

    async def on_get(self, request: Request, token: str) -> tuple[int, JsonDict]:
        """GET /_synapse/admin/v1/registration_tokens/{token}"""
        await require_admin(self._auth, request)
        return 200, token_to_json(await self._existing(token))

    async def on_create(self, request: Request) -> tuple[int, JsonDict]:
        """POST /_synapse/admin/v1/registration_tokens/new

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` for a malformed field, an expiry in the past, or a
                token that already exists.
        """
        requester = await require_admin(self._auth, request)
        body = parse_json_object_from_request(request, allow_empty=True)
        token = body.get("token")
        if token is not None and (not isinstance(token, str) or not TOKEN_RE.fullmatch(token)):
            raise MatrixError(400, Codes.INVALID_PARAM, "'token' must be 1-64 characters from A-Za-z0-9._~-")
        length = optional_int(body, "length", DEFAULT_GENERATED_LENGTH, minimum=1, maximum=64)
        if token is not None and "length" in body:
            raise MatrixError(400, Codes.INVALID_PARAM, "Give either 'token' or 'length', not both")
        uses_allowed = _nullable_int(body, "uses_allowed")
        expiry = _nullable_int(body, "expiry_time")
        if expiry is not None and expiry < self._now():
            raise MatrixError(400, Codes.INVALID_PARAM, "'expiry_time' must not be in the past")
        if token is None:
            assert length is not None
            for _ in range(3):  # a collision of 16 random characters is astronomically unlikely
                token = "".join(secrets.choice(_GENERATED_ALPHABET) for _ in range(length))
                if await self._store.add_registration_token(token, uses_allowed, expiry):
                    break
            else:
                raise MatrixError(400, Codes.INVALID_PARAM, "Could not generate an unused token; use a longer one")
        elif not await self._store.add_registration_token(token, uses_allowed, expiry):
            raise MatrixError(400, Codes.INVALID_PARAM, "Token already exists")
        # The token is a credential for registration, so only its length is logged.
        logger.info(
            "admin created registration token",
            extra={"admin_user_id": requester.user_id, "token_length": len(token), "uses_allowed": uses_allowed},
        )
        return 200, token_to_json(await self._existing(token))

    async def on_update(self, request: Request, token: str) -> tuple[int, JsonDict]:
        """PUT /_synapse/admin/v1/registration_tokens/{token}"""
        requester = await require_admin(self._auth, request)
        body = parse_json_object_from_request(request)
        changes: dict[str, int | None] = {}
        if "uses_allowed" in body:
            changes["uses_allowed"] = _nullable_int(body, "uses_allowed")
        if "expiry_time" in body:
            expiry = _nullable_int(body, "expiry_time")
            if expiry is not None and expiry < self._now():
                raise MatrixError(400, Codes.INVALID_PARAM, "'expiry_time' must not be in the past")
            changes["expiry_ts"] = expiry
        await self._existing(token)
        record = await self._store.update_registration_token(token, changes)
        if record is None:  # deleted in between
            raise MatrixError(404, Codes.NOT_FOUND, "No such registration token")
        logger.info("admin updated registration token", extra={"admin_user_id": requester.user_id})
        return 200, token_to_json(record)

    async def on_delete(self, request: Request, token: str) -> tuple[int, JsonDict]:
        """DELETE /_synapse/admin/v1/registration_tokens/{token}"""
        requester = await require_admin(self._auth, request)
        if not TOKEN_RE.fullmatch(token) or not await self._store.delete_registration_token(token):
            raise MatrixError(404, Codes.NOT_FOUND, "No such registration token")
        logger.info("admin deleted registration token", extra={"admin_user_id": requester.user_id})
        return 200, {}
