"""Account creation and deactivation are the same whichever entry point asks (issue 10, ADR 0015).

Entry points: the client's ``POST /register`` and ``POST /account/deactivate``, the admin API's
``PUT /_synapse/admin/v2/users/{userId}`` and ``POST /_synapse/admin/v1/deactivate/{userId}``, and the
``register-user`` command (:func:`homeserver.app.composition.register_user_in`, what it runs once the
homeserver is built). All go through :class:`homeserver.auth.accounts.AccountService`. Both databases.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred, ensureDeferred

from homeserver.app.composition import register_user_in
from homeserver.auth.accounts import NewAccount
from sc_proto.errors import MatrixError
from tests.homeserver.server_case import FullHomeserverTestCase
from tests.homeserver.test_account import password_auth

V3 = "/_matrix/client/v3"
ADMIN = "/_synapse/admin"
PASSWORD = "p4ssw0rd-long"
SERVER = "test:8448"


def uid(localpart: str) -> str:
    return f"@{localpart}:{SERVER}"


class AccountTestCase(FullHomeserverTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        self.register_user("root", admin=True)
        self.admin_token = self.login("root")["access_token"]

    # ------------------------------------------------------------------ the three ways to create an account

    def via_client(self, localpart: str, password: str = PASSWORD) -> tuple[int, dict[str, Any]]:
        body = {"username": localpart, "password": password, "auth": {"type": "m.login.dummy"}}
        channel = self.make_request("POST", f"{V3}/register", body)
        return channel.code, channel.json_body

    def via_admin(self, localpart: str, password: str = PASSWORD) -> tuple[int, dict[str, Any]]:
        path = f"{ADMIN}/v2/users/{quote(uid(localpart))}"
        channel = self.make_request("PUT", path, {"password": password}, access_token=self.admin_token)
        return channel.code, channel.json_body

    def via_cli(self, user: str, password: str = PASSWORD) -> tuple[int, str]:
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = self.get_success(register_user_in(self.hs, user, password, False))
        return code, err.getvalue()

    def account_facts(self, user_id: str) -> dict[str, Any]:
        """What an account looks like in the stores, minus what differs by design (ID, time, hash)."""
        user = self.get_success(self.hs.stores.users.get_user(user_id))
        assert user is not None
        profile = self.get_success(self.hs.stores.profiles.get_profile(user_id))
        return {
            "admin": user.is_admin,
            "guest": user.is_guest,
            "deactivated": user.deactivated,
            "locked": user.locked,
            "has_password": user.password_hash is not None,
            "profile": None if profile is None else profile.to_json(),
            "admin_view": self.get_success(self.hs.stores.users.get_user_admin_view(user_id)) is not None,
        }


class CreationTests(AccountTestCase):
    def test_every_entry_point_creates_the_same_account(self) -> None:
        """Client, admin API and CLI give the same account row and profile row; each can log in."""
        self.assertEqual(self.via_client("carol1")[0], 200)
        self.assertEqual(self.via_admin("carol2")[0], 201)
        self.assertEqual(self.via_cli("carol3")[0], 0)
        facts = [self.account_facts(uid(f"carol{i}")) for i in (1, 2, 3)]
        expected = {"admin": False, "guest": False, "deactivated": False, "locked": False, "has_password": True,
                    "profile": {}, "admin_view": True}
        self.assertEqual(facts, [expected] * 3)
        for i in (1, 2, 3):
            self.login(f"carol{i}")

    def test_same_validation_errors_everywhere(self) -> None:
        """A localpart outside the grammar for new users is 400 M_INVALID_USERNAME with one message."""
        for bad in ("bad name", "caf\u00e9", "a#b", "x" * 254):
            client = self.via_client(bad)
            code, err = self.via_cli(bad)
            if len(uid(bad)) <= 255:  # a longer path parameter is refused by the HTTP layer first
                self.assertEqual(self.via_admin(bad), client, bad)
            self.assertEqual(client[0], 400, bad)
            self.assertEqual(client[1]["errcode"], "M_INVALID_USERNAME", bad)
            self.assertEqual(code, 1, bad)
            self.assertIn(client[1]["error"], err, bad)
            self.assertIsNone(self.get_success(self.hs.stores.users.find_user_case_insensitive(uid(bad))))

    def test_too_long_user_id(self) -> None:
        """A localpart that fits but makes the user ID longer than 255 bytes: the same error for the
        client and the CLI (the admin API's path parameter is refused before, as any over-long path ID)."""
        client = self.via_client("x" * 250)
        self.assertEqual((client[0], client[1]["errcode"]), (400, "M_INVALID_USERNAME"))
        code, err = self.via_cli("x" * 250)
        self.assertEqual(code, 1)
        self.assertIn(client[1]["error"], err)
        admin = self.via_admin("x" * 250)
        self.assertEqual((admin[0], admin[1]["errcode"]), (400, "M_INVALID_PARAM"))

    def test_upper_case_is_refused_where_it_is_not_lowered(self) -> None:
        """The admin API and the CLI take the localpart as given: ``Dora`` is refused by both; the
        client's username is only the basis of the localpart and is lower-cased (spec)."""
        self.assertEqual(self.via_admin("Dora")[1]["errcode"], "M_INVALID_USERNAME")
        self.assertEqual(self.via_cli("Dora")[0], 1)
        self.assertEqual(self.via_client("Dora")[1]["user_id"], uid("dora"))

    def test_taken_is_user_in_use_everywhere(self) -> None:
        """An existing user ID is 400 M_USER_IN_USE from the client and the admin API; the CLI fails."""
        self.assertEqual(self.via_client("dave")[0], 200)
        self.assertEqual(self.via_client("dave")[1]["errcode"], "M_USER_IN_USE")
        # The admin API's PUT on an existing account modifies it; a creation through the service
        # (what the PUT does for a new ID) of a taken ID is refused the same way.
        taken = self.get_failure(self.hs.accounts.create_account(NewAccount("dave", PASSWORD)), MatrixError)
        self.assertEqual(taken.value.errcode.value, "M_USER_IN_USE")
        code, err = self.via_cli("dave")
        self.assertEqual(code, 1)
        self.assertIn(f"{uid('dave')} already exists", err)

    def test_register_user_refuses_another_server(self) -> None:
        """``register-user "@bob:other.org"`` fails and creates nothing; ``@bob:test:8448`` works."""
        code, err = self.via_cli("@bob:other.org")
        self.assertEqual(code, 1)
        self.assertIn("not a user of this server", err)
        self.assertIsNone(self.get_success(self.hs.stores.users.find_user_case_insensitive("@bob:other.org")))
        self.assertIsNone(self.get_success(self.hs.stores.users.find_user_case_insensitive(uid("bob"))))
        self.assertEqual(self.via_cli(uid("bob"))[0], 0)

    def test_password_policy_binds_users_not_admins(self) -> None:
        """A weak password is 400 M_WEAK_PASSWORD for the client and the CLI; admins may set any."""
        client = self.via_client("erin", "short")
        self.assertEqual((client[0], client[1]["errcode"]), (400, "M_WEAK_PASSWORD"))
        code, err = self.via_cli("erin", "short")
        self.assertEqual(code, 1)
        self.assertIn(client[1]["error"], err)
        self.assertEqual(self.via_admin("erin", "short")[0], 201)

    def test_admin_creation_writes_the_profile_with_the_account(self) -> None:
        """The admin API's displayname/avatar_url land in the profile row created with the account."""
        path = f"{ADMIN}/v2/users/{quote(uid('fay'))}"
        body = {"password": PASSWORD, "displayname": "Fay", "avatar_url": "mxc://test:8448/fay"}
        channel = self.make_request("PUT", path, body, access_token=self.admin_token)
        self.assertEqual(channel.code, 201, channel.json_body)
        profile = self.get_success(self.hs.stores.profiles.get_profile(uid("fay")))
        self.assertEqual(profile.to_json(), {"displayname": "Fay", "avatar_url": "mxc://test:8448/fay"})


class CreationRaceTests(AccountTestCase):
    def _hold_hashing(self) -> list[Deferred[str]]:
        """Makes password hashing wait until the test fires it (so both creations pass the checks first)."""
        held: list[Deferred[str]] = []

        def hash_password(password: str) -> Deferred[str]:
            d: Deferred[str] = Deferred()
            held.append(d)
            return d

        self.hs.sessions.hash_password = hash_password  # type: ignore[method-assign]  # test double
        return held

    def _result_of(self, d: Deferred[Any]) -> Any:
        results: list[Any] = []
        d.addBoth(results.append)
        self.pump()
        self.assertEqual(len(results), 1)
        return results[0]

    def test_two_creations_of_one_localpart(self) -> None:
        """Both pass the availability check; one wins, the other gets 400 M_USER_IN_USE."""
        held = self._hold_hashing()
        first = ensureDeferred(self.hs.accounts.create_account(NewAccount("gil", PASSWORD)))
        second = ensureDeferred(self.hs.accounts.create_account(NewAccount("gil", PASSWORD, admin=True)))
        self.pump()
        self.assertEqual(len(held), 2)  # both are past the availability check
        held[1].callback("$argon2id$second")
        held[0].callback("$argon2id$first")
        outcomes = [self._result_of(first), self._result_of(second)]
        winners = [o for o in outcomes if o == uid("gil")]
        losers = [o for o in outcomes if o is not winners[0]]
        self.assertEqual(len(winners), 1, outcomes)
        self.assertEqual(losers[0].value.errcode.value, "M_USER_IN_USE")
        user = self.get_success(self.hs.stores.users.get_user(uid("gil")))
        self.assertEqual((user.password_hash, user.is_admin), ("$argon2id$second", True))  # the first to insert

    def test_register_and_cli_race(self) -> None:
        """A ``/register`` and a ``register-user`` of the same name at once: one account, one refusal."""
        held = self._hold_hashing()
        cli = ensureDeferred(self.hs.create_user("hal", PASSWORD))
        self.pump()
        body = {"username": "hal", "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
        channel = self.make_request("POST", f"{V3}/register", body, await_result=False)
        self.pump()
        self.assertEqual(len(held), 2)
        held[0].callback("$argon2id$cli")
        self.assertEqual(self._result_of(cli), uid("hal"))
        held[1].callback("$argon2id$client")
        self.pump()
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_USER_IN_USE"))


class DeactivationTests(AccountTestCase):
    """Client and admin deactivation have the same effects (the admin one used to keep the profile)."""

    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.owner = self.login(self.register_and_name("owner"))["access_token"]
        channel = self.make_request("POST", f"{V3}/createRoom", {"preset": "public_chat"}, access_token=self.owner)
        self.room_id = channel.json_body["room_id"]

    def register_and_name(self, localpart: str) -> str:
        user_id = self.register_user(localpart)
        token = self.login(localpart)["access_token"]
        for field, value in (("displayname", localpart.title()), ("avatar_url", f"mxc://test:8448/{localpart}")):
            channel = self.make_request("PUT", f"{V3}/profile/{quote(user_id)}/{field}", {field: value},
                                        access_token=token)
            self.assertEqual(channel.code, 200, channel.json_body)
        return localpart

    def member_of_room(self, localpart: str) -> str:
        token = self.login(self.register_and_name(localpart))["access_token"]
        self.assertEqual(self.make_request("POST", f"{V3}/join/{self.room_id}", {}, access_token=token).code, 200)
        self.get_success(self.hs.stores.account_data.set_account_data(uid(localpart), None, "org.example", {"a": 1}))
        return token

    def deactivate_via_client(self, localpart: str, token: str, erase: bool) -> None:
        body = {"auth": password_auth(localpart, PASSWORD), "erase": erase}
        channel = self.make_request("POST", f"{V3}/account/deactivate", body, access_token=token)
        self.assertEqual(channel.code, 200, channel.json_body)

    def deactivate_via_admin(self, localpart: str, erase: bool) -> None:
        channel = self.make_request("POST", f"{ADMIN}/v1/deactivate/{quote(uid(localpart))}", {"erase": erase},
                                    access_token=self.admin_token)
        self.assertEqual(channel.code, 200, channel.json_body)

    def deactivate_via_admin_put(self, localpart: str) -> None:
        channel = self.make_request("PUT", f"{ADMIN}/v2/users/{quote(uid(localpart))}", {"deactivated": True},
                                    access_token=self.admin_token)
        self.assertEqual(channel.code, 200, channel.json_body)

    def effects(self, localpart: str, token: str) -> dict[str, Any]:
        user_id = uid(localpart)
        user = self.get_success(self.hs.stores.users.get_user(user_id))
        profile = self.get_success(self.hs.stores.profiles.get_profile(user_id))
        data = self.get_success(self.hs.stores.account_data.get_account_data(user_id, None, "org.example"))
        return {
            "deactivated": user.deactivated,
            "password": user.password_hash,
            "devices": self.get_success(self.hs.stores.devices.get_devices(user_id)),
            "token": self.whoami(token).code,
            "profile": profile.to_json(),
            "membership": self.get_success(self.hs.rooms.creator.state.get_membership(self.room_id, user_id)),
            "account_data": data,
        }

    def test_client_and_admin_deactivation_have_the_same_effects(self) -> None:
        """Sessions end, the room is left, the profile is cleared; the account data stays without erase."""
        tokens = {name: self.member_of_room(name) for name in ("ann", "ben", "cat")}
        self.deactivate_via_client("ann", tokens["ann"], erase=False)
        self.deactivate_via_admin("ben", erase=False)
        self.deactivate_via_admin_put("cat")
        expected = {"deactivated": True, "password": None, "devices": [], "token": 401, "profile": {},
                    "membership": "leave", "account_data": {"a": 1}}
        for name, token in tokens.items():
            self.assertEqual(self.effects(name, token), expected, name)

    def test_admin_deactivation_clears_the_profile(self) -> None:
        """The named bug: admin deactivation without erase used to leave displayname and avatar."""
        self.member_of_room("dan")
        self.deactivate_via_admin("dan", erase=False)
        self.assertEqual(self.get_success(self.hs.stores.profiles.get_profile(uid("dan"))).to_json(), {})
        lookup = self.make_request("GET", f"{V3}/profile/{quote(uid('dan'))}", access_token=self.owner)
        self.assertEqual(lookup.json_body.get("displayname"), None, lookup.json_body)

    def test_erase_deletes_account_data_everywhere(self) -> None:
        """``erase: true`` deletes the account data for the client and the admin API alike."""
        tokens = {name: self.member_of_room(name) for name in ("eve", "fred")}
        self.deactivate_via_client("eve", tokens["eve"], erase=True)
        self.deactivate_via_admin("fred", erase=True)
        self.assertEqual(self.effects("eve", tokens["eve"]), self.effects("fred", tokens["fred"]))
        self.assertIsNone(self.effects("fred", tokens["fred"])["account_data"])

    def test_leave_event_is_sent_before_the_profile_is_cleared(self) -> None:
        """The room sees one leave, and the member event left behind carries no stale profile."""
        self.member_of_room("gus")
        self.deactivate_via_admin("gus", erase=False)
        head = self.get_success(self.hs.rooms.creator.get_head(self.room_id))
        member = self.get_success(self.hs.rooms.creator.state.get_current_member(self.room_id, uid("gus"), head))
        self.assertEqual(member.event.membership, "leave")
        self.assertNotIn("displayname", member.event.content)
