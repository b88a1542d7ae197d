"""User-interactive authentication (spec client-server-api, "User-Interactive Authentication API").

Theory of operation: an endpoint protected by UIA calls :meth:`InteractiveAuth.authenticate` with the
flows it accepts. Without an ``auth`` object the server opens a session (stored in the database, so any
worker can continue it) and answers 401 with the flows. Each request that names the session and a stage
type runs that stage; when the completed stages cover one flow, the session is consumed and the endpoint
proceeds. A session is bound to the method and path that opened it and expires after
:data:`SESSION_LIFETIME_MS`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.auth.sessions import SessionService
from homeserver.identity import LocalServer
from homeserver.storage.stores.ui_auth import UIAuthStore
from sc_proto.errors import Codes, MatrixError

SESSION_LIFETIME_MS = 30 * 60 * 1000

DUMMY = "m.login.dummy"
PASSWORD = "m.login.password"  # noqa: S105 - a stage name, not a secret
REGISTRATION_TOKEN = "m.login.registration_token"  # noqa: S105 - a stage name


class InteractiveAuthRequired(MatrixError):
    """401 carrying the UIA state (flows, params, session, completed, and the stage error if any)."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        errcode = Codes(body["errcode"]) if "errcode" in body else Codes.UNAUTHORIZED
        super().__init__(401, errcode, str(body.get("error", "Additional authentication is required")))
        self.body = dict(body)

    def to_json(self) -> dict[str, Any]:
        return dict(self.body)


@dataclass(frozen=True)
class UIAResult:
    """A finished UIA session.

    Attributes:
        completed: the stages completed.
        user_id: the user a password stage authenticated, if any.
    """

    completed: tuple[str, ...]
    user_id: str | None


class InteractiveAuth:
    """Runs UIA sessions.

    Args:
        store: session and registration-token storage.
        sessions: checks passwords (with lockout accounting).
        server_name: qualifies bare localparts.
        time_msec: the clock.
        config_tokens: registration tokens from the config file (unlimited uses).
    """

    def __init__(
        self,
        store: UIAuthStore,
        sessions: SessionService,
        server_name: str,
        time_msec: Callable[[], int],
        config_tokens: Sequence[str] = (),
    ) -> None:
        self._store = store
        self._sessions = sessions
        self._server_name = server_name
        self._local = LocalServer(server_name)
        self._now = time_msec
        self._config_tokens = frozenset(config_tokens)

    async def authenticate(
        self,
        request_key: str,
        body: Mapping[str, Any],
        flows: Sequence[Sequence[str]],
        *,
        user_id: str | None = None,
    ) -> UIAResult:
        """Runs one UIA step for a request.

        Args:
            request_key: identifies the operation (method and path); a session cannot switch operation.
            body: the request body (its ``auth`` object is read).
            flows: the accepted flows, each a list of stage types.
            user_id: for re-authentication, the user the password stage must prove.

        Returns:
            The finished session when a flow is complete.

        Raises:
            InteractiveAuthRequired: more stages are needed (401 with the UIA state).
            MatrixError: a malformed ``auth`` object, or an unknown or mismatched session.
        """
        request_hash = hashlib.sha256(request_key.encode()).hexdigest()
        auth = body.get("auth")
        if auth is None:
            new_session = secrets.token_urlsafe(18)
            await self._store.create_session(new_session, self._now(), request_hash, user_id)
            raise InteractiveAuthRequired(self._state(flows, new_session, ()))
        if not isinstance(auth, Mapping):
            raise MatrixError(400, Codes.BAD_JSON, "'auth' must be an object")
        session_id: object = auth.get("session")
        stage: object = auth.get("type")
        if session_id is None:
            # A single-stage flow may be completed without a session (clients re-authenticating directly).
            session_id = secrets.token_urlsafe(18)
            await self._store.create_session(session_id, self._now(), request_hash, user_id)
        if not isinstance(session_id, str) or (stage is not None and not isinstance(stage, str)):
            raise MatrixError(400, Codes.BAD_JSON, "'auth.session' and 'auth.type' must be strings")
        session = await self._store.get_session(session_id)
        if session is None or session.created_ts + SESSION_LIFETIME_MS < self._now():
            raise MatrixError(400, Codes.UNKNOWN, "Unknown or expired user-interactive auth session")
        if session.request_hash != request_hash:
            raise MatrixError(403, Codes.FORBIDDEN, "The operation changed during the authentication session")
        completed = session.completed_stages
        if stage is not None:
            allowed = {s for flow in flows for s in flow}
            if stage not in allowed:
                raise InteractiveAuthRequired(
                    {**self._state(flows, session_id, completed), "errcode": Codes.UNRECOGNIZED.value,
                     "error": f"Stage {stage} is not offered"}
                )
            authed_user = await self._run_stage(stage, auth, user_id, flows, session_id, completed)
            completed = await self._store.add_completed_stage(session_id, stage)
        else:
            authed_user = None
        for flow in flows:
            if all(s in completed for s in flow):
                await self._store.delete_session(session_id)
                return UIAResult(completed, authed_user or user_id)
        raise InteractiveAuthRequired(self._state(flows, session_id, completed))

    async def _run_stage(
        self,
        stage: str,
        auth: Mapping[str, Any],
        user_id: str | None,
        flows: Sequence[Sequence[str]],
        session_id: str,
        completed: tuple[str, ...],
    ) -> str | None:
        def fail(message: str, errcode: Codes = Codes.FORBIDDEN) -> InteractiveAuthRequired:
            return InteractiveAuthRequired(
                {**self._state(flows, session_id, completed), "errcode": errcode.value, "error": message}
            )

        if stage == DUMMY:
            return None
        if stage == REGISTRATION_TOKEN:
            token = auth.get("token")
            if not isinstance(token, str) or not token:
                raise fail("Missing registration token", Codes.MISSING_PARAM)
            if token in self._config_tokens or await self._store.consume_registration_token(token, self._now()):
                return None
            raise fail("Invalid registration token", Codes.UNAUTHORIZED)
        if stage == PASSWORD:
            claimed = self._password_user(auth)
            password = auth.get("password")
            if claimed is None or not isinstance(password, str):
                raise fail("'identifier' and 'password' are required", Codes.MISSING_PARAM)
            claimed = self._local.qualify(claimed)
            if user_id is not None and claimed.lower() != user_id.lower():
                raise fail("You can only authenticate as yourself")
            target = user_id or claimed
            if not await self._sessions.check_password(target, password):
                raise fail("Invalid password")
            return target
        raise fail(f"Unsupported stage {stage}", Codes.UNRECOGNIZED)

    @staticmethod
    def _password_user(auth: Mapping[str, Any]) -> str | None:
        identifier = auth.get("identifier")
        if isinstance(identifier, Mapping) and identifier.get("type") == "m.id.user":
            user = identifier.get("user")
            return user if isinstance(user, str) else None
        user = auth.get("user")  # deprecated top-level form
        return user if isinstance(user, str) else None

    @staticmethod
    def _state(flows: Sequence[Sequence[str]], session_id: str, completed: Sequence[str]) -> dict[str, Any]:
        return {
            "flows": [{"stages": list(flow)} for flow in flows],
            "params": {},
            "session": session_id,
            "completed": list(completed),
        }
