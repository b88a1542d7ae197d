"""The media JSON endpoints (uploads, config, usage, deletion and admin); downloads are in :mod:`media.download`.

Spec (client-server-api "Content repository", v1.11+ authenticated media):

* ``POST /_matrix/media/v3/upload`` · ``POST /_matrix/media/v1/create`` ·
  ``PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`` (``r0`` aliases for the upload)
* ``GET /_matrix/client/v1/media/config`` (and the deprecated ``/_matrix/media/v3/config``)

SecureConnect extensions (docs/media.md):

* ``GET /_sc/client/v1/media/usage`` · ``DELETE /_sc/client/v1/media/{serverName}/{mediaId}``
* ``GET/PUT /_synapse/admin/v1/users/{userId}/media_quota``
* ``POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}`` (and ``unquarantine``) ·
  ``DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}``

``/_matrix/client/v1/media/preview_url`` is not registered (URL previews are not implemented), so it
answers 404 ``M_UNRECOGNIZED`` as the spec wants when the feature is off.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.http.auth import Authenticator, Requester
from homeserver.http.server import JsonBody, JsonResource
from homeserver.http.servlet import parse_json_object_from_request, parse_string
from homeserver.identity import LocalServer
from media.repository import MediaRepository
from sc_proto.errors import Codes, InvalidIdentifierError, MatrixError
from sc_proto.identifiers import UserID
from sc_proto.media.mxc import MXCUri

MAX_FILENAME_LENGTH = 255
MAX_CONTENT_TYPE_LENGTH = 255
MAX_QUOTA = 2**53 - 1


def check_filename(filename: str | None) -> str | None:
    """Validates the ``filename`` query parameter (no control characters, bounded length).

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM``.
    """
    if filename is None or filename == "":
        return None
    if len(filename) > MAX_FILENAME_LENGTH or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in filename):
        raise MatrixError(400, Codes.INVALID_PARAM, "Invalid filename")
    return filename


def declared_content_type(request: Request) -> str | None:
    """The request's ``Content-Type`` header, if any.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` for an unreadable or overlong value.
    """
    raw = request.getHeader(b"Content-Type")
    if raw is None:
        return None
    value = raw.decode("latin-1")
    if len(value) > MAX_CONTENT_TYPE_LENGTH or not value.isascii():
        raise MatrixError(400, Codes.INVALID_PARAM, "Invalid Content-Type")
    return value


def local_media_id(server_name: str, media_id: str) -> MXCUri:
    """Validates an ``mxc://`` pair from a path.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` for a malformed server name or media ID.
    """
    try:
        return MXCUri(server_name, media_id)
    except InvalidIdentifierError:
        raise MatrixError(400, Codes.INVALID_PARAM, "Invalid server name or media ID") from None


class MediaServlets:
    """Registers the media JSON endpoints.

    Args:
        repository: the media repository.
        authenticator: access-token authentication.
    """

    def __init__(self, repository: MediaRepository, authenticator: Authenticator) -> None:
        self._repo = repository
        self._auth = authenticator
        self._config = repository.config

    def register(self, resource: JsonResource) -> None:
        """Adds the routes to ``resource``."""
        limit = self._config.max_upload_size
        resource.register(
            "POST", ["/_matrix/media/v3/upload", "/_matrix/media/r0/upload"], self.on_upload, max_body_size=limit
        )
        resource.register("POST", "/_matrix/media/v1/create", self.on_create)
        resource.register(
            "PUT", "/_matrix/media/v3/upload/{serverName}/{mediaId}", self.on_upload_reserved, max_body_size=limit
        )
        resource.register(
            "GET",
            ["/_matrix/client/v1/media/config", "/_matrix/media/v3/config", "/_matrix/media/r0/config"],
            self.on_config,
        )
        resource.register("GET", "/_sc/client/v1/media/usage", self.on_usage)
        resource.register("DELETE", "/_sc/client/v1/media/{serverName}/{mediaId}", self.on_delete_own)
        resource.register("GET", "/_synapse/admin/v1/users/{userId}/media_quota", self.on_admin_get_quota)
        resource.register("PUT", "/_synapse/admin/v1/users/{userId}/media_quota", self.on_admin_set_quota)
        resource.register(
            "POST", "/_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}", self.on_admin_quarantine
        )
        resource.register(
            "POST", "/_synapse/admin/v1/media/unquarantine/{serverName}/{mediaId}", self.on_admin_unquarantine
        )
        resource.register("DELETE", "/_synapse/admin/v1/media/{serverName}/{mediaId}", self.on_admin_delete)

    # ------------------------------------------------------------------ uploads

    async def on_upload(self, request: Request) -> tuple[int, JsonBody]:
        """POST /_matrix/media/v3/upload"""
        requester = await self._auth.get_requester(request)
        filename = check_filename(parse_string(request, "filename"))
        content_type = declared_content_type(request)
        content_uri = await self._repo.upload(requester.user_id, _body(request), content_type, filename)
        return 200, {"content_uri": content_uri}

    async def on_create(self, request: Request) -> tuple[int, JsonBody]:
        """POST /_matrix/media/v1/create"""
        requester = await self._auth.get_requester(request)
        content_uri, expires = await self._repo.create(requester.user_id)
        return 200, {"content_uri": content_uri, "unused_expires_at": expires}

    async def on_upload_reserved(self, request: Request, server_name: str, media_id: str) -> tuple[int, JsonBody]:
        """PUT /_matrix/media/v3/upload/{serverName}/{mediaId}"""
        requester = await self._auth.get_requester(request)
        mxc = local_media_id(server_name, media_id)
        if mxc.server_name != self._repo.server_name:
            raise MatrixError(404, Codes.NOT_FOUND, "Unknown media ID")
        filename = check_filename(parse_string(request, "filename"))
        content_type = declared_content_type(request)
        await self._repo.upload(requester.user_id, _body(request), content_type, filename, reserved_media_id=media_id)
        return 200, {}

    async def on_config(self, request: Request) -> tuple[int, JsonBody]:
        """GET /_matrix/client/v1/media/config"""
        await self._auth.get_requester(request, allow_guest=True)
        return 200, {"m.upload.size": self._config.max_upload_size}

    # ------------------------------------------------------------------ extensions

    async def on_usage(self, request: Request) -> tuple[int, JsonBody]:
        """GET /_sc/client/v1/media/usage"""
        requester = await self._auth.get_requester(request)
        return 200, await self._repo.get_usage(requester.user_id)

    async def on_delete_own(self, request: Request, server_name: str, media_id: str) -> tuple[int, JsonBody]:
        """DELETE /_sc/client/v1/media/{serverName}/{mediaId}"""
        requester = await self._auth.get_requester(request)
        local_media_id(server_name, media_id)
        await self._repo.delete_own(requester.user_id, server_name, media_id)
        return 200, {}

    # ------------------------------------------------------------------ admin

    async def _admin(self, request: Request) -> Requester:
        requester = await self._auth.get_requester(request)
        if not requester.is_admin:
            raise MatrixError(403, Codes.FORBIDDEN, "You are not a server admin")
        return requester

    def _local_user(self, user_id: str) -> str:
        try:
            parsed = UserID.parse(user_id)
        except InvalidIdentifierError:
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid user ID") from None
        if not LocalServer(self._repo.server_name).is_mine(parsed):
            raise MatrixError(400, Codes.INVALID_PARAM, "Can only manage local users")
        return user_id

    async def on_admin_get_quota(self, request: Request, user_id: str) -> tuple[int, JsonBody]:
        """GET /_synapse/admin/v1/users/{userId}/media_quota"""
        await self._admin(request)
        return 200, await self._repo.get_usage(self._local_user(user_id))

    async def on_admin_set_quota(self, request: Request, user_id: str) -> tuple[int, JsonBody]:
        """PUT /_synapse/admin/v1/users/{userId}/media_quota

        Body: ``{"quota_bytes": <int >= 0> | null}`` (null: back to the configured default).
        """
        await self._admin(request)
        target = self._local_user(user_id)
        body = parse_json_object_from_request(request)
        if "quota_bytes" not in body:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing 'quota_bytes'")
        quota: Any = body["quota_bytes"]
        if quota is not None and (isinstance(quota, bool) or not isinstance(quota, int) or not 0 <= quota <= MAX_QUOTA):
            raise MatrixError(400, Codes.INVALID_PARAM, "'quota_bytes' must be a non-negative integer or null")
        await self._repo.store.set_quota(target, quota)
        return 200, await self._repo.get_usage(target)

    async def on_admin_quarantine(self, request: Request, server_name: str, media_id: str) -> tuple[int, JsonBody]:
        """POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}"""
        requester = await self._admin(request)
        local_media_id(server_name, media_id)
        await self._repo.set_quarantine(server_name, media_id, requester.user_id)
        return 200, {}

    async def on_admin_unquarantine(self, request: Request, server_name: str, media_id: str) -> tuple[int, JsonBody]:
        """POST /_synapse/admin/v1/media/unquarantine/{serverName}/{mediaId}"""
        await self._admin(request)
        local_media_id(server_name, media_id)
        await self._repo.set_quarantine(server_name, media_id, None)
        return 200, {}

    async def on_admin_delete(self, request: Request, server_name: str, media_id: str) -> tuple[int, JsonBody]:
        """DELETE /_synapse/admin/v1/media/{serverName}/{mediaId} (purges the file too)"""
        await self._admin(request)
        local_media_id(server_name, media_id)
        if server_name != self._repo.server_name or not await self._repo.delete(media_id):
            raise MatrixError(404, Codes.NOT_FOUND, "Media not found")
        return 200, {"deleted_media": [media_id], "total": 1}


def _body(request: Request) -> Any:
    content = request.content
    if content is None:
        import io

        return io.BytesIO(b"")
    return content
