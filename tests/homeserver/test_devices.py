"""Device management and device last-seen tracking through the real composition root (both databases)."""

from __future__ import annotations

from typing import Any
from unittest import TestCase

from twisted.internet import defer

from homeserver.http.auth import Requester
from homeserver.rest.client.devices import LAST_SEEN_INTERVAL_MS, LastSeenTracker
from tests.homeserver.server_case import FullHomeserverTestCase

PW = "p4ssw0rd-long"
DEVICES = "/_matrix/client/v3/devices"
DELETE_DEVICES = "/_matrix/client/v3/delete_devices"


def password_auth(user: str, password: str = PW, session: str | None = None) -> dict[str, Any]:
    auth: dict[str, Any] = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}
    if session is not None:
        auth["session"] = session
    return auth


class DeviceTestCase(FullHomeserverTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        self.register_user("alice")
        self.register_user("bob")
        self.a = self.login("alice", device_id="ALICEA", initial_device_display_name="Laptop")
        self.b = self.login("alice", device_id="ALICEB")
        self.bob = self.login("bob", device_id="BOBDEV", initial_device_display_name="Bob phone")

    def device_ids(self, user_id: str) -> list[str]:
        return [d.device_id for d in self.get_success(self.hs.stores.devices.get_devices(user_id))]


class ListAndGetTests(DeviceTestCase):
    def test_list_own_devices(self) -> None:
        """GET /devices lists exactly the caller's devices with the spec's fields."""
        channel = self.make_request("GET", DEVICES, access_token=self.a["access_token"])
        self.assertEqual(channel.code, 200)
        devices = {d["device_id"]: d for d in channel.json_body["devices"]}
        self.assertEqual(set(devices), {"ALICEA", "ALICEB"})
        self.assertEqual(devices["ALICEA"]["display_name"], "Laptop")
        self.assertNotIn("display_name", devices["ALICEB"])  # absent when not set
        self.assertEqual(devices["ALICEA"]["last_seen_ip"], "127.0.0.1")
        self.assertIsInstance(devices["ALICEA"]["last_seen_ts"], int)

    def test_get_one_device(self) -> None:
        """GET /devices/{id} returns that device."""
        channel = self.make_request("GET", f"{DEVICES}/ALICEB", access_token=self.a["access_token"])
        self.assertEqual(channel.code, 200)
        self.assertEqual(channel.json_body["device_id"], "ALICEB")

    def test_unknown_and_foreign_devices_are_404(self) -> None:
        """Another user's device is indistinguishable from an unknown one: 404 M_NOT_FOUND."""
        for device_id in ("NOPE", "BOBDEV"):
            channel = self.make_request("GET", f"{DEVICES}/{device_id}", access_token=self.a["access_token"])
            self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"))

    def test_requires_token(self) -> None:
        """Device endpoints need an access token."""
        self.assertEqual(self.make_request("GET", DEVICES).code, 401)
        self.assertEqual(self.make_request("GET", f"{DEVICES}/ALICEA").code, 401)


class RenameTests(DeviceTestCase):
    def test_rename(self) -> None:
        """PUT /devices/{id} sets the display name."""
        channel = self.make_request("PUT", f"{DEVICES}/ALICEB", {"display_name": "Phone"}, access_token=self.a["access_token"])
        self.assertEqual((channel.code, channel.json_body), (200, {}))
        got = self.make_request("GET", f"{DEVICES}/ALICEB", access_token=self.a["access_token"])
        self.assertEqual(got.json_body["display_name"], "Phone")

    def test_missing_display_name_leaves_it_unchanged(self) -> None:
        """An empty object changes nothing."""
        self.assertEqual(self.make_request("PUT", f"{DEVICES}/ALICEA", {}, access_token=self.a["access_token"]).code, 200)
        got = self.make_request("GET", f"{DEVICES}/ALICEA", access_token=self.a["access_token"])
        self.assertEqual(got.json_body["display_name"], "Laptop")

    def test_rename_unknown_or_foreign_device_is_404(self) -> None:
        """Renaming someone else's device is 404 and changes nothing."""
        for device_id in ("NOPE", "BOBDEV"):
            channel = self.make_request("PUT", f"{DEVICES}/{device_id}", {"display_name": "x"}, access_token=self.a["access_token"])
            self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"))
        bob_device = self.get_success(self.hs.stores.devices.get_device("@bob:test:8448", "BOBDEV"))
        self.assertEqual(bob_device.display_name, "Bob phone")

    def test_bad_bodies(self) -> None:
        """Wrong types, oversized names and non-JSON are 400."""
        for body, errcode in [
            ({"display_name": 5}, "M_INVALID_PARAM"),
            ({"display_name": "x" * 257}, "M_INVALID_PARAM"),
            (b"nope", "M_NOT_JSON"),
            (["x"], "M_NOT_JSON"),
        ]:
            channel = self.make_request("PUT", f"{DEVICES}/ALICEA", body, access_token=self.a["access_token"])
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, errcode), body)


class DeleteTests(DeviceTestCase):
    def test_delete_needs_uia(self) -> None:
        """Without auth: 401 with the password flow and a session; the device survives."""
        channel = self.make_request("DELETE", f"{DEVICES}/ALICEA", access_token=self.b["access_token"])
        self.assertEqual(channel.code, 401)
        self.assertEqual(channel.json_body["flows"], [{"stages": ["m.login.password"]}])
        self.assertIn("session", channel.json_body)
        self.assertEqual(self.whoami(self.a["access_token"]).code, 200)

    def test_delete_device_a_from_session_b(self) -> None:
        """Deleting A from B ends A's session only."""
        session = self.make_request("DELETE", f"{DEVICES}/ALICEA", access_token=self.b["access_token"]).json_body["session"]
        channel = self.make_request(
            "DELETE", f"{DEVICES}/ALICEA", {"auth": password_auth("alice", session=session)}, access_token=self.b["access_token"]
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(self.whoami(self.a["access_token"]).code, 401)
        self.assertEqual(self.whoami(self.b["access_token"]).code, 200)
        self.assertEqual(self.whoami(self.bob["access_token"]).code, 200)
        self.assertEqual(self.device_ids("@alice:test:8448"), ["ALICEB"])

    def test_wrong_password_deletes_nothing(self) -> None:
        """Wrong password: 401 M_FORBIDDEN and the device survives."""
        channel = self.make_request(
            "DELETE", f"{DEVICES}/ALICEA", {"auth": password_auth("alice", "wrong-password")}, access_token=self.b["access_token"]
        )
        self.assertEqual((channel.code, channel.json_body["errcode"]), (401, "M_FORBIDDEN"))
        self.assertEqual(self.whoami(self.a["access_token"]).code, 200)

    def test_cannot_delete_other_users_device(self) -> None:
        """Bob's device is 404 for Alice even with her valid password; Bob stays logged in."""
        channel = self.make_request(
            "DELETE", f"{DEVICES}/BOBDEV", {"auth": password_auth("alice")}, access_token=self.a["access_token"]
        )
        self.assertEqual((channel.code, channel.json_body["errcode"]), (404, "M_NOT_FOUND"))
        self.assertEqual(self.whoami(self.bob["access_token"]).code, 200)

    def test_uia_session_is_bound_to_the_device(self) -> None:
        """A session opened to delete ALICEA cannot delete ALICEB."""
        session = self.make_request("DELETE", f"{DEVICES}/ALICEA", access_token=self.a["access_token"]).json_body["session"]
        channel = self.make_request(
            "DELETE", f"{DEVICES}/ALICEB", {"auth": password_auth("alice", session=session)}, access_token=self.a["access_token"]
        )
        self.assertEqual(channel.code, 403)
        self.assertEqual(self.whoami(self.b["access_token"]).code, 200)

    def test_delete_bad_body(self) -> None:
        """A malformed auth object is 400."""
        channel = self.make_request("DELETE", f"{DEVICES}/ALICEA", {"auth": "x"}, access_token=self.b["access_token"])
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_BAD_JSON"))


class BulkDeleteTests(DeviceTestCase):
    def test_delete_devices_touches_only_own(self) -> None:
        """Own devices are deleted; another user's device ID and unknown IDs are ignored."""
        body = {"devices": ["ALICEA", "BOBDEV", "NOPE"], "auth": password_auth("alice")}
        channel = self.make_request("POST", DELETE_DEVICES, body, access_token=self.b["access_token"])
        self.assertEqual((channel.code, channel.json_body), (200, {}))
        self.assertEqual(self.whoami(self.a["access_token"]).code, 401)
        self.assertEqual(self.whoami(self.b["access_token"]).code, 200)
        self.assertEqual(self.whoami(self.bob["access_token"]).code, 200)
        self.assertEqual(self.device_ids("@bob:test:8448"), ["BOBDEV"])

    def test_delete_devices_needs_uia(self) -> None:
        """Without auth: 401 challenge; with a wrong password: 401 M_FORBIDDEN; nothing deleted."""
        first = self.make_request("POST", DELETE_DEVICES, {"devices": ["ALICEA"]}, access_token=self.b["access_token"])
        self.assertEqual(first.code, 401)
        self.assertIn("session", first.json_body)
        wrong = self.make_request(
            "POST", DELETE_DEVICES, {"devices": ["ALICEA"], "auth": password_auth("alice", "bad-password")},
            access_token=self.b["access_token"],
        )
        self.assertEqual((wrong.code, wrong.json_body["errcode"]), (401, "M_FORBIDDEN"))
        self.assertEqual(self.device_ids("@alice:test:8448"), ["ALICEA", "ALICEB"])

    def test_uia_session_is_bound_to_the_device_list(self) -> None:
        """A session opened for one list cannot be completed for a bigger one."""
        session = self.make_request(
            "POST", DELETE_DEVICES, {"devices": ["ALICEA"]}, access_token=self.b["access_token"]
        ).json_body["session"]
        channel = self.make_request(
            "POST", DELETE_DEVICES, {"devices": ["ALICEA", "ALICEB"], "auth": password_auth("alice", session=session)},
            access_token=self.b["access_token"],
        )
        self.assertEqual(channel.code, 403)
        self.assertEqual(self.device_ids("@alice:test:8448"), ["ALICEA", "ALICEB"])

    def test_bad_bodies(self) -> None:
        """Missing, mistyped and oversized device lists are 400."""
        for body, errcode in [
            ({}, "M_MISSING_PARAM"),
            ({"devices": "ALICEA"}, "M_INVALID_PARAM"),
            ({"devices": [1]}, "M_INVALID_PARAM"),
            ({"devices": [f"D{i}" for i in range(1001)]}, "M_INVALID_PARAM"),
            (b"{", "M_NOT_JSON"),
        ]:
            channel = self.make_request("POST", DELETE_DEVICES, body, access_token=self.b["access_token"])
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, errcode), str(body)[:40])
        self.assertEqual(self.device_ids("@alice:test:8448"), ["ALICEA", "ALICEB"])


class LastSeenTests(DeviceTestCase):
    def _device(self, device_id: str = "ALICEA") -> Any:
        return self.get_success(self.hs.stores.devices.get_device("@alice:test:8448", device_id))

    def _whoami(self, ip: str, agent: str) -> None:
        channel = self.make_request(
            "GET", "/_matrix/client/v3/account/whoami", access_token=self.a["access_token"],
            headers=[("User-Agent", agent)], client_ip=ip,
        )
        self.assertEqual(channel.code, 200)

    def test_last_seen_recorded_and_throttled(self) -> None:
        """AUTH-6: the first use records ts/ip/agent; uses within 5 minutes are not written; later ones are."""
        self.reactor.advance(10)
        first_ts = int(self.reactor.seconds() * 1000)
        self._whoami("10.0.0.1", "Client/1")
        device = self._device()
        self.assertEqual((device.last_seen_ts, device.last_seen_ip, device.last_seen_user_agent), (first_ts, "10.0.0.1", "Client/1"))
        self.reactor.advance(60)
        self._whoami("10.0.0.2", "Client/2")
        self.assertEqual(self._device().last_seen_ip, "10.0.0.1")  # throttled
        self.reactor.advance(LAST_SEEN_INTERVAL_MS / 1000)
        self._whoami("10.0.0.3", "Client/3")
        device = self._device()
        self.assertEqual((device.last_seen_ip, device.last_seen_user_agent), ("10.0.0.3", "Client/3"))
        self.assertGreater(device.last_seen_ts, first_ts)

    def test_throttle_is_per_device(self) -> None:
        """Using device B right after A still records B."""
        self._whoami("10.0.0.1", "A")
        self.make_request(
            "GET", "/_matrix/client/v3/account/whoami", access_token=self.b["access_token"], client_ip="10.0.0.9"
        )
        self.assertEqual(self._device("ALICEB").last_seen_ip, "10.0.0.9")

    def test_failed_write_does_not_fail_the_request(self) -> None:
        """A failing last-seen write is logged; the request still succeeds."""

        async def broken(*args: object) -> None:
            raise RuntimeError("database down")

        self.hs.last_seen._record = broken
        with self.assertLogs("homeserver.rest.client.devices", "WARNING"):
            self._whoami("10.0.0.1", "A")


def _requester(user: str = "@a:test:8448", device: str | None = "D1") -> Requester:
    return Requester(user_id=user, device_id=device, access_token_id="t", is_guest=False, is_admin=False, ip="1.2.3.4", user_agent="UA")


class LastSeenTrackerTests(TestCase):
    """The tracker alone, with a fake clock and a recording function."""

    def setUp(self) -> None:
        self.now = 1_000_000
        self.writes: list[tuple[Any, ...]] = []
        self.fail_next = False

        async def record(*args: Any) -> None:
            if self.fail_next:
                self.fail_next = False
                raise RuntimeError("boom")
            self.writes.append(args)

        self.tracker = LastSeenTracker(record, lambda: self.now, interval_ms=1000, max_entries=3)

    def test_throttles_per_device(self) -> None:
        """One write per device per interval."""
        self.tracker.on_authenticated(_requester())
        self.tracker.on_authenticated(_requester())
        self.tracker.on_authenticated(_requester(device="D2"))
        self.now += 1000
        self.tracker.on_authenticated(_requester())
        self.assertEqual([w[1] for w in self.writes], ["D1", "D2", "D1"])
        self.assertEqual(self.writes[0], ("@a:test:8448", "D1", "1.2.3.4", "UA", 1_000_000))

    def test_tokens_without_device_are_ignored(self) -> None:
        """Nothing to record without a device."""
        self.tracker.on_authenticated(_requester(device=None))
        self.assertEqual(self.writes, [])

    def test_failure_allows_an_immediate_retry(self) -> None:
        """After a failed write the next use writes again at once."""
        self.fail_next = True
        with self.assertLogs("homeserver.rest.client.devices", "WARNING"):
            self.tracker.on_authenticated(_requester())
        self.tracker.on_authenticated(_requester())
        self.assertEqual(len(self.writes), 1)

    def test_table_stays_bounded(self) -> None:
        """Past max_entries, stale entries are dropped (and the table never grows without bound)."""
        for i in range(10):
            self.tracker.on_authenticated(_requester(device=f"D{i}"))
            self.now += 2000
        self.assertLessEqual(len(self.tracker._last_written), 3)
        self.assertEqual(len(self.writes), 10)

    def test_write_runs_without_waiting(self) -> None:
        """The request path does not wait: a pending write leaves on_authenticated returning at once."""
        pending: defer.Deferred[None] = defer.Deferred()

        async def slow(*args: Any) -> None:
            await pending

        tracker = LastSeenTracker(slow, lambda: self.now)
        tracker.on_authenticated(_requester())  # returns although the write has not finished
        pending.callback(None)
