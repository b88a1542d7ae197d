"""Recording fakes of the outward ports (``homeserver.api.ports``) for tests of the remote branches.

Each fake records its calls as ``(method, args...)`` tuples in ``calls`` and answers from
``answers[method]``: a value to return, an exception to raise, or a callable computing the answer
from the call's arguments. A method without an answer raises 404 ``M_NOT_FOUND``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from homeserver.api.ports import JsonDict, RemoteJoinResult, RemoteMedia, RemotePorts
from sc_proto.errors import Codes, MatrixError


class Recorder:
    """Records calls and answers them from ``answers``."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.answers: dict[str, Any] = {}

    def answer(self, method: str, *args: Any) -> Any:
        self.calls.append((method, *args))
        if method not in self.answers:
            raise MatrixError(404, Codes.NOT_FOUND, f"fake: no answer for {method}")
        found = self.answers[method]
        if isinstance(found, BaseException):
            raise found
        return found(*args) if callable(found) else found

    def called(self, method: str) -> list[tuple[Any, ...]]:
        """The argument tuples of every call of ``method``."""
        return [c[1:] for c in self.calls if c[0] == method]


class FakeSender(Recorder):
    def notify_new_events(self, position: int) -> None:
        self.calls.append(("notify_new_events", position))

    async def send_edu(self, destinations: Collection[str], edu_type: str, content: JsonDict) -> None:
        self.calls.append(("send_edu", list(destinations), edu_type, content))
        failure = self.answers.get("send_edu")
        if isinstance(failure, BaseException):
            raise failure


class FakeEventFetcher(Recorder):
    async def get_event(self, destination: str, event_id: str) -> JsonDict | None:
        return self.answer("get_event", destination, event_id)

    async def get_missing_events(
        self, destination: str, room_id: str, earliest: Sequence[str], latest: Sequence[str], limit: int
    ) -> list[JsonDict]:
        return self.answer("get_missing_events", destination, room_id, earliest, latest, limit)

    async def get_state_ids(self, destination: str, room_id: str, event_id: str) -> tuple[list[str], list[str]]:
        return self.answer("get_state_ids", destination, room_id, event_id)

    async def backfill(self, destination: str, room_id: str, from_event_ids: Sequence[str], limit: int) -> list[JsonDict]:
        return self.answer("backfill", destination, room_id, from_event_ids, limit)

    async def get_event_auth(self, destination: str, room_id: str, event_id: str) -> list[JsonDict]:
        return self.answer("get_event_auth", destination, room_id, event_id)


class FakeMembership(Recorder):
    async def join(self, servers: Sequence[str], room_id: str, user_id: str, content: JsonDict) -> RemoteJoinResult:
        return self.answer("join", list(servers), room_id, user_id, content)

    async def invite(self, room_version: str, event: JsonDict, invite_room_state: Sequence[JsonDict]) -> JsonDict:
        return self.answer("invite", room_version, event, list(invite_room_state))

    async def leave(self, servers: Sequence[str], room_id: str, user_id: str) -> JsonDict:
        return self.answer("leave", list(servers), room_id, user_id)

    async def knock(self, servers: Sequence[str], room_id: str, user_id: str, content: JsonDict) -> JsonDict:
        return self.answer("knock", list(servers), room_id, user_id, content)


class FakeKeyQuerier(Recorder):
    async def query_keys(self, destination: str, device_keys: Mapping[str, Sequence[str]], timeout_ms: int) -> JsonDict:
        return self.answer("query_keys", destination, dict(device_keys), timeout_ms)

    async def claim_keys(
        self, destination: str, one_time_keys: Mapping[str, Mapping[str, str]], timeout_ms: int
    ) -> JsonDict:
        return self.answer("claim_keys", destination, dict(one_time_keys), timeout_ms)

    async def get_user_devices(self, destination: str, user_id: str) -> JsonDict:
        return self.answer("get_user_devices", destination, user_id)


class FakeMediaFetcher(Recorder):
    async def fetch(self, server_name: str, media_id: str, max_bytes: int, timeout_ms: int) -> RemoteMedia:
        return self.answer("fetch", server_name, media_id, max_bytes, timeout_ms)


class FakeProfileQuerier(Recorder):
    async def get_profile(self, user_id: str, field: str | None = None) -> JsonDict:
        return self.answer("get_profile", user_id, field)


class FakeDirectoryQuerier(Recorder):
    async def resolve_alias(self, alias: str) -> tuple[str, list[str]]:
        return self.answer("resolve_alias", alias)


class FakePorts:
    """One recording fake per port; :meth:`ports` bundles them for ``build_homeserver``."""

    def __init__(self) -> None:
        self.sender = FakeSender()
        self.events = FakeEventFetcher()
        self.membership = FakeMembership()
        self.keys = FakeKeyQuerier()
        self.media = FakeMediaFetcher()
        self.profiles = FakeProfileQuerier()
        self.directory = FakeDirectoryQuerier()

    def ports(self) -> RemotePorts:
        return RemotePorts(
            sender=self.sender,
            events=self.events,
            membership=self.membership,
            keys=self.keys,
            media=self.media,
            profiles=self.profiles,
            directory=self.directory,
        )
