"""Accounts through matrix-nio against a real server process, on SQLite and PostgreSQL.

matrix-nio runs on asyncio/aiohttp, so each test drives it with ``asyncio.run`` in the test's own
thread; the server is a separate process (see conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    DevicesError,
    DevicesResponse,
    LoginError,
    LoginResponse,
    LogoutError,
    LogoutResponse,
    RegisterResponse,
    WhoamiError,
    WhoamiResponse,
)
from nio.responses import RegisterErrorResponse

from bench.common import ServerProcess
from tests.integration.conftest import SERVER_NAME

pytestmark = pytest.mark.integration

PASSWORD = "correct-horse-battery"
T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    """Runs an asyncio scenario to completion (outside any Twisted reactor)."""
    return asyncio.run(_bounded(scenario()))


async def _bounded(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, timeout=60)


@asynccontextmanager
async def nio_client(server: ServerProcess, store: Path, user: str = "") -> AsyncIterator[AsyncClient]:
    """An AsyncClient without encryption that never retries (a 429 or timeout is returned, not slept on)."""
    config = AsyncClientConfig(
        encryption_enabled=False, store_sync_tokens=False, max_limit_exceeded=0, max_timeouts=0
    )
    store.mkdir(parents=True, exist_ok=True)
    client = AsyncClient(server.base_url, user, config=config, store_path=str(store))
    try:
        yield client
    finally:
        await client.close()


def uid(localpart: str) -> str:
    return f"@{localpart}:{SERVER_NAME}"


async def register(server: ServerProcess, store: Path, localpart: str) -> RegisterResponse:
    async with nio_client(server, store) as client:
        response = await client.register(localpart, PASSWORD, device_name="registration")
    assert isinstance(response, RegisterResponse), response
    return response


async def whoami_with(client: AsyncClient, token: str) -> WhoamiResponse | WhoamiError:
    """whoami with an explicit token (nio forgets its token after a logout)."""
    client.access_token = token
    return await client.whoami()


class RegisterTests:
    def test_register_returns_a_working_session(self, homeserver_any_db: ServerProcess, tmp_path: Path) -> None:
        """nio's register (m.login.dummy) creates the account and logs the client in."""

        async def scenario() -> None:
            async with nio_client(homeserver_any_db, tmp_path / "a") as client:
                response = await client.register("alice", PASSWORD, device_name="Laptop")
                assert isinstance(response, RegisterResponse), response
                assert response.user_id == uid("alice")
                assert response.device_id and response.access_token
                who = await client.whoami()
                assert isinstance(who, WhoamiResponse), who
                assert (who.user_id, who.device_id) == (uid("alice"), response.device_id)

        run(scenario)

    def test_taken_and_invalid_usernames_are_refused(
        self, homeserver_any_db: ServerProcess, tmp_path: Path
    ) -> None:
        """A second registration of a name gets M_USER_IN_USE; a malformed name M_INVALID_USERNAME."""

        async def scenario() -> None:
            await register(homeserver_any_db, tmp_path / "a", "alice")
            async with nio_client(homeserver_any_db, tmp_path / "b") as client:
                taken = await client.register("alice", PASSWORD)
                assert isinstance(taken, RegisterErrorResponse), taken
                assert taken.status_code == "M_USER_IN_USE"
                invalid = await client.register("Not Valid!", PASSWORD)
                assert isinstance(invalid, RegisterErrorResponse), invalid
                assert invalid.status_code == "M_INVALID_USERNAME"
                assert client.access_token == ""

        run(scenario)


class LoginTests:
    def test_login_whoami_logout(self, homeserver_any_db: ServerProcess, tmp_path: Path) -> None:
        """Password login gives a token whoami accepts; after logout the token is refused."""

        async def scenario() -> None:
            await register(homeserver_any_db, tmp_path / "r", "alice")
            async with nio_client(homeserver_any_db, tmp_path / "a", uid("alice")) as client:
                login = await client.login(PASSWORD, device_name="Phone")
                assert isinstance(login, LoginResponse), login
                assert login.user_id == uid("alice")
                who = await client.whoami()
                assert isinstance(who, WhoamiResponse), who
                assert (who.user_id, who.device_id) == (uid("alice"), login.device_id)
                logout = await client.logout()
                assert isinstance(logout, LogoutResponse), logout
                stale = await whoami_with(client, login.access_token)
                assert isinstance(stale, WhoamiError), stale
                assert stale.status_code == "M_UNKNOWN_TOKEN"

        run(scenario)

    def test_second_session_survives_first_logout(self, homeserver_any_db: ServerProcess, tmp_path: Path) -> None:
        """Two clients of one user get distinct devices; one logging out leaves the other logged in."""

        async def scenario() -> None:
            await register(homeserver_any_db, tmp_path / "r", "alice")
            async with (
                nio_client(homeserver_any_db, tmp_path / "a", uid("alice")) as first,
                nio_client(homeserver_any_db, tmp_path / "b", uid("alice")) as second,
            ):
                one = await first.login(PASSWORD, device_name="one")
                two = await second.login(PASSWORD, device_name="two")
                assert isinstance(one, LoginResponse) and isinstance(two, LoginResponse), (one, two)
                assert one.device_id != two.device_id
                assert isinstance(await first.logout(), LogoutResponse)
                who = await second.whoami()
                assert isinstance(who, WhoamiResponse), who
                assert who.device_id == two.device_id
                assert isinstance(await whoami_with(first, one.access_token), WhoamiError)

        run(scenario)

    def test_wrong_password_gives_login_error(self, homeserver_any_db: ServerProcess, tmp_path: Path) -> None:
        """A wrong password is a LoginError (M_FORBIDDEN) that leaves the client logged out; the right one works."""

        async def scenario() -> None:
            await register(homeserver_any_db, tmp_path / "r", "alice")
            async with nio_client(homeserver_any_db, tmp_path / "a", uid("alice")) as client:
                wrong = await client.login("not-the-password")
                assert isinstance(wrong, LoginError), wrong
                assert wrong.status_code == "M_FORBIDDEN"
                assert not client.access_token
                assert isinstance(await client.login(PASSWORD), LoginResponse)

        run(scenario)

    def test_unknown_user_looks_like_wrong_password(self, homeserver_any_db: ServerProcess, tmp_path: Path) -> None:
        """Logging in as a user that does not exist is the same LoginError (no account enumeration)."""

        async def scenario() -> None:
            async with nio_client(homeserver_any_db, tmp_path / "a", uid("nobody")) as client:
                response = await client.login(PASSWORD)
                assert isinstance(response, LoginError), response
                assert response.status_code == "M_FORBIDDEN"

        run(scenario)

    def test_login_again_after_logout(self, homeserver_any_db: ServerProcess, tmp_path: Path) -> None:
        """The same client logs in again after logging out, with a new device and a working token."""

        async def scenario() -> None:
            await register(homeserver_any_db, tmp_path / "r", "alice")
            async with nio_client(homeserver_any_db, tmp_path / "a", uid("alice")) as client:
                first = await client.login(PASSWORD)
                assert isinstance(first, LoginResponse), first
                assert isinstance(await client.logout(), LogoutResponse)
                again = await client.login(PASSWORD)
                assert isinstance(again, LoginResponse), again
                assert again.access_token != first.access_token
                assert isinstance(await client.whoami(), WhoamiResponse)
                assert isinstance(await whoami_with(client, first.access_token), WhoamiError)

        run(scenario)

    def test_logout_all_devices(self, homeserver_any_db: ServerProcess, tmp_path: Path) -> None:
        """logout(all_devices=True) ends every session of the user."""

        async def scenario() -> None:
            await register(homeserver_any_db, tmp_path / "r", "alice")
            async with (
                nio_client(homeserver_any_db, tmp_path / "a", uid("alice")) as first,
                nio_client(homeserver_any_db, tmp_path / "b", uid("alice")) as second,
            ):
                one, two = await first.login(PASSWORD), await second.login(PASSWORD)
                assert isinstance(one, LoginResponse) and isinstance(two, LoginResponse)
                assert isinstance(await first.logout(all_devices=True), LogoutResponse)
                assert isinstance(await whoami_with(first, one.access_token), WhoamiError)
                assert isinstance(await whoami_with(second, two.access_token), WhoamiError)

        run(scenario)

    def test_bad_tokens_are_refused(self, homeserver_any_db: ServerProcess, tmp_path: Path) -> None:
        """A forged token gets M_UNKNOWN_TOKEN for whoami and logout."""

        async def scenario() -> None:
            async with nio_client(homeserver_any_db, tmp_path / "a", uid("alice")) as client:
                who = await whoami_with(client, "sct_forged")
                assert isinstance(who, WhoamiError) and who.status_code == "M_UNKNOWN_TOKEN", who
                logout = await client.logout()
                assert isinstance(logout, LogoutError) and logout.status_code == "M_UNKNOWN_TOKEN", logout

        run(scenario)


class DevicesTests:
    def test_devices_lists_the_users_sessions(self, homeserver_any_db: ServerProcess, tmp_path: Path) -> None:
        """devices() lists the user's sessions with their display names."""

        async def scenario() -> DevicesResponse | DevicesError:
            await register(homeserver_any_db, tmp_path / "r", "alice")
            async with (
                nio_client(homeserver_any_db, tmp_path / "a", uid("alice")) as first,
                nio_client(homeserver_any_db, tmp_path / "b", uid("alice")) as second,
            ):
                one = await first.login(PASSWORD, device_name="Laptop")
                two = await second.login(PASSWORD, device_name="Phone")
                assert isinstance(one, LoginResponse) and isinstance(two, LoginResponse)
                response = await first.devices()
                if isinstance(response, DevicesResponse):
                    names = {d.id: d.display_name for d in response.devices}
                    assert names.get(one.device_id) == "Laptop"
                    assert names.get(two.device_id) == "Phone"
                return response

        response = run(scenario)
        assert isinstance(response, DevicesResponse), response
