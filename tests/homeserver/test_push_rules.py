"""Push rules: the default ruleset, the evaluator, ``/pushrules`` CRUD, ``m.push_rules`` in ``/sync`` and
unread counts driven by the rules (both databases; spec client-server-api "Push Notifications")."""

from __future__ import annotations

import unittest
import urllib.parse
from typing import Any

from twisted.internet.defer import ensureDeferred

from homeserver.push.evaluator import (
    NO_ACTIONS,
    CompiledRuleset,
    PushRuleEvaluator,
    compile_glob,
    split_path,
    summarise_actions,
)
from homeserver.push.rules import build_ruleset, default_ruleset
from homeserver.push.service import PushRulesService
from tests.homeserver.test_rooms_core import V3
from tests.homeserver.test_sync import SyncTestCase
from tests.unittest import override_config

ALICE = "@alice:test:8448"
BOB = "@bob:test:8448"
ROOM = "!room:test:8448"

SPEC_OVERRIDE_ORDER = [
    ".m.rule.master",
    ".m.rule.suppress_notices",
    ".m.rule.invite_for_me",
    ".m.rule.member_event",
    ".m.rule.is_user_mention",
    ".m.rule.is_room_mention",
    ".m.rule.tombstone",
    ".m.rule.reaction",
    ".m.rule.room.server_acl",
    ".m.rule.suppress_edits",
]
SPEC_UNDERRIDE_ORDER = [
    ".m.rule.call",
    ".m.rule.encrypted_room_one_to_one",
    ".m.rule.room_one_to_one",
    ".m.rule.message",
    ".m.rule.encrypted",
]


def ids(rules: list[dict[str, Any]]) -> list[str]:
    return [r["rule_id"] for r in rules]


def message(body: str = "hello", sender: str = ALICE, **content: Any) -> dict[str, Any]:
    return {"type": "m.room.message", "sender": sender, "room_id": ROOM,
            "content": {"msgtype": "m.text", "body": body, **content}}


class _Power:
    """Stands in for RoomPowerLevels: who may notify the room."""

    def __init__(self, allowed: set[str]) -> None:
        self.allowed = allowed

    def sender_may_notify(self, sender: str, key: str) -> bool:
        return key == "room" and sender in self.allowed


def bob_rules(**changes: Any) -> CompiledRuleset:
    """Bob's compiled default ruleset, with ``(kind, rule_id) -> rule`` changes merged in."""
    ruleset = default_ruleset(BOB)
    for kind, rules in changes.get("prepend", {}).items():
        ruleset[kind] = rules + ruleset[kind]
    for rule in ruleset["override"] + ruleset["underride"]:
        if rule["rule_id"] in changes.get("disable", ()):
            rule["enabled"] = False
        if rule["rule_id"] in changes.get("enable", ()):
            rule["enabled"] = True
    return CompiledRuleset(BOB, ruleset)


class DefaultRulesetTests(unittest.TestCase):
    def test_shape_and_order_follow_the_spec(self) -> None:
        """The server-default rules are exactly the spec's, in its order, all marked default."""
        ruleset = default_ruleset(BOB)
        self.assertEqual(list(ruleset), ["override", "content", "room", "sender", "underride"])
        self.assertEqual(ids(ruleset["override"]), SPEC_OVERRIDE_ORDER)
        self.assertEqual(ids(ruleset["underride"]), SPEC_UNDERRIDE_ORDER)
        self.assertEqual((ruleset["content"], ruleset["room"], ruleset["sender"]), ([], [], []))
        for rule in ruleset["override"] + ruleset["underride"]:
            self.assertTrue(rule["default"])
            self.assertEqual(rule["enabled"], rule["rule_id"] != ".m.rule.master")
        mention = ruleset["override"][4]
        self.assertEqual(mention["conditions"][0]["value"], BOB)
        self.assertEqual(mention["actions"], ["notify", {"set_tweak": "sound", "value": "default"},
                                              {"set_tweak": "highlight"}])
        self.assertEqual(ruleset["override"][2]["conditions"][2], {"kind": "event_match", "key": "state_key",
                                                                   "pattern": BOB})

    def test_master_precedes_user_overrides(self) -> None:
        """User rules come before the defaults of their kind, except that .m.rule.master stays first."""

        class Rule:
            def __init__(self, kind: str, rule_id: str) -> None:
                self.kind, self.rule_id, self.enabled = kind, rule_id, True
                self.definition = {"actions": [], "conditions": []}

        ruleset = build_ruleset(BOB, [Rule("override", "mine"), Rule("underride", "low")], {})
        self.assertEqual(ids(ruleset["override"])[:3], [".m.rule.master", "mine", ".m.rule.suppress_notices"])
        self.assertEqual(ids(ruleset["underride"])[0], "low")


class GlobAndPathTests(unittest.TestCase):
    def test_whole_value_globs(self) -> None:
        """The spec's examples: case-insensitive, '?' is one character, '*' any run, whole value."""
        glob = compile_glob("lunc?*", False)
        self.assertTrue(glob("Lunch plans"))
        self.assertTrue(glob("LUNCH"))
        self.assertFalse(glob(" lunch"))
        self.assertFalse(glob("lunc"))
        self.assertTrue(compile_glob("", False)(""))
        self.assertFalse(compile_glob("", False)("x"))
        self.assertTrue(compile_glob("a*b*c", False)("aXXbYYc"))
        self.assertFalse(compile_glob("a*b*c", False)("aXXbYYcd"))
        self.assertTrue(compile_glob("m.room.*", False)("m.room.message"))
        self.assertFalse(compile_glob("m.room.*", False)("mxroom.message"))  # '.' is literal

    def test_body_globs_match_at_word_boundaries(self) -> None:
        """content.body matching: any substring starting and ending at a word boundary."""
        glob = compile_glob("ex*ple", True)
        self.assertTrue(glob("An example event."))
        self.assertTrue(glob("exple"))
        self.assertTrue(glob("An exciting triple-whammy"))
        self.assertFalse(glob("examples"))
        self.assertFalse(compile_glob("cake", True)("pancakes"))
        self.assertTrue(compile_glob("cake", True)("I like CAKE!"))
        self.assertTrue(compile_glob("cake", True)("épcake_x cake"))  # é is a boundary, _ is not
        self.assertFalse(compile_glob("cake", True)("cake_x"))

    def test_many_star_patterns_on_long_bodies(self) -> None:
        """Many-star patterns against a long body that nearly matches everywhere give the right answer
        (their speed, linear in the body, is measured by ``bench/push_rules.py``, not asserted here)."""
        body = "a " * 30_000
        self.assertFalse(compile_glob("a*a*a*a*a*a*a*b", True)(body))
        self.assertFalse(compile_glob("*a*a*a*b*", False)(body))
        self.assertTrue(compile_glob("a*a*a*a*a*a*a*b", True)(body + "b"))
        self.assertTrue(compile_glob("*a*a*a*b*", False)(body + "b"))

    def test_dot_paths_with_escapes(self) -> None:
        self.assertEqual(split_path("content.m\\.relates_to.rel_type"), ("content", "m.relates_to", "rel_type"))
        self.assertEqual(split_path("content.m\\\\foo"), ("content", "m\\foo"))
        self.assertEqual(split_path("content.a\\xb"), ("content", "a\\xb"))

    def test_actions_summary(self) -> None:
        """highlight with no value is true; historical actions are ignored."""
        summary = summarise_actions(["notify", "dont_notify", {"set_tweak": "highlight"},
                                     {"set_tweak": "sound", "value": "ring"}])
        self.assertTrue(summary.notify and summary.highlight)
        self.assertEqual(summary.sound, "ring")
        self.assertFalse(summarise_actions([{"set_tweak": "highlight", "value": False}]).highlight)


class DefaultRuleEvaluationTests(unittest.TestCase):
    def setUp(self) -> None:
        self.rules = bob_rules()

    def rule_for(self, event: dict[str, Any], members: int = 5, **kwargs: Any) -> str | None:
        return self.rules.evaluate(event, members, **kwargs).rule_id

    def test_messages(self) -> None:
        """Group messages notify silently; one-to-one messages notify with sound; never highlight."""
        actions = self.rules.evaluate(message(), 5)
        self.assertEqual((actions.rule_id, actions.notify, actions.highlight, actions.sound),
                         (".m.rule.message", True, False, None))
        actions = self.rules.evaluate(message(), 2)
        self.assertEqual((actions.rule_id, actions.sound), (".m.rule.room_one_to_one", "default"))

    def test_user_mention_highlights_but_body_text_does_not(self) -> None:
        """.m.rule.is_user_mention: m.mentions.user_ids; the legacy body rules are gone (spec v1.17)."""
        actions = self.rules.evaluate(message("hi", **{"m.mentions": {"user_ids": [BOB]}}), 5)
        self.assertEqual((actions.rule_id, actions.notify, actions.highlight), (".m.rule.is_user_mention", True, True))
        self.assertEqual(self.rule_for(message("hi @bob:test:8448 Bob")), ".m.rule.message")
        self.assertEqual(self.rule_for(message("hi", **{"m.mentions": {"user_ids": "@bob:test:8448"}})), ".m.rule.message")

    def test_room_mention_needs_power(self) -> None:
        """.m.rule.is_room_mention highlights only when the sender's level reaches notifications.room."""
        event = message("@room", **{"m.mentions": {"room": True}})
        actions = self.rules.evaluate(event, 5, power_levels=_Power({ALICE}))  # type: ignore[arg-type]
        self.assertEqual((actions.rule_id, actions.highlight), (".m.rule.is_room_mention", True))
        self.assertEqual(self.rule_for(event, power_levels=_Power(set())), ".m.rule.message")
        self.assertEqual(self.rule_for(event), ".m.rule.message")  # no power levels known: no match
        truthy = message("@room", **{"m.mentions": {"room": 1}})
        self.assertEqual(self.rule_for(truthy, power_levels=_Power({ALICE})), ".m.rule.message")

    def test_suppressed_events(self) -> None:
        """Notices, member events, reactions, server ACLs and edits match rules with no actions."""
        cases = {
            ".m.rule.suppress_notices": message(msgtype="m.notice"),
            ".m.rule.member_event": {"type": "m.room.member", "sender": ALICE, "state_key": ALICE,
                                     "content": {"membership": "join"}},
            ".m.rule.reaction": {"type": "m.reaction", "sender": ALICE, "content": {}},
            ".m.rule.room.server_acl": {"type": "m.room.server_acl", "sender": ALICE, "state_key": "", "content": {}},
            ".m.rule.suppress_edits": message("* fixed", **{"m.relates_to": {"rel_type": "m.replace",
                                                                              "event_id": "$x"}}),
        }
        for rule_id, event in cases.items():
            actions = self.rules.evaluate(event, 2)
            self.assertEqual(actions.rule_id, rule_id)
            self.assertFalse(actions.notify or actions.highlight, rule_id)

    def test_invites_tombstones_calls_and_encrypted(self) -> None:
        invite = {"type": "m.room.member", "sender": ALICE, "state_key": BOB, "content": {"membership": "invite"}}
        self.assertEqual(self.rule_for(invite), ".m.rule.invite_for_me")
        other = {**invite, "state_key": "@carol:test:8448"}
        self.assertEqual(self.rule_for(other), ".m.rule.member_event")
        tombstone = {"type": "m.room.tombstone", "sender": ALICE, "state_key": "", "content": {}}
        self.assertTrue(self.rules.evaluate(tombstone, 5).highlight)
        self.assertEqual(self.rule_for({**tombstone, "state_key": "x"}), None)
        call = self.rules.evaluate({"type": "m.call.invite", "sender": ALICE, "content": {}}, 5)
        self.assertEqual((call.rule_id, call.sound), (".m.rule.call", "ring"))
        encrypted = {"type": "m.room.encrypted", "sender": ALICE, "content": {"ciphertext": "x"}}
        self.assertEqual(self.rule_for(encrypted, 2), ".m.rule.encrypted_room_one_to_one")
        self.assertEqual(self.rule_for(encrypted, 3), ".m.rule.encrypted")
        self.assertIs(self.rules.evaluate({"type": "m.room.topic", "sender": ALICE, "content": {}}, 5), NO_ACTIONS)

    def test_own_events_and_master(self) -> None:
        """The user's own events never notify; an enabled master rule silences everything."""
        self.assertIs(self.rules.evaluate(message(sender=BOB), 2), NO_ACTIONS)
        silenced = bob_rules(enable={".m.rule.master"})
        actions = silenced.evaluate(message(**{"m.mentions": {"user_ids": [BOB]}}), 2)
        self.assertEqual((actions.rule_id, actions.notify), (".m.rule.master", False))

    def test_disabled_and_unknown_conditions(self) -> None:
        """Disabled rules and rules with an unrecognised condition never match."""
        self.assertIsNone(bob_rules(disable={".m.rule.message"}).evaluate(message(), 5).rule_id)
        weird = {"rule_id": "weird", "default": False, "enabled": True, "actions": ["notify"],
                 "conditions": [{"kind": "org.example.unknown"}]}
        self.assertEqual(bob_rules(prepend={"override": [weird]}).evaluate(message(), 5).rule_id, ".m.rule.message")

    def test_user_rule_kinds(self) -> None:
        """Content, room and sender rules, and the other condition kinds."""
        user = lambda rid, actions, **extra: {"rule_id": rid, "default": False, "enabled": True,  # noqa: E731
                                               "actions": actions, **extra}
        rules = bob_rules(prepend={
            "content": [user("cake", ["notify", {"set_tweak": "highlight"}], pattern="cake*lie")],
            "room": [user(ROOM, [])],
            "sender": [user("@spam:test:8448", [])],
            "override": [
                user("name", ["notify", {"set_tweak": "highlight"}], conditions=[{"kind": "contains_display_name"}]),
                user("big", ["notify", {"set_tweak": "sound", "value": "x"}],
                     conditions=[{"kind": "room_member_count", "is": ">=100"}]),
                user("prop", ["notify"], conditions=[{"kind": "event_property_is", "key": "content.n", "value": 1}]),
            ],
        })
        self.assertEqual(rules.evaluate(message("the cake is a lie"), 5).rule_id, "cake")
        other_room = {**message("hi"), "room_id": "!other:test:8448"}
        self.assertEqual(rules.evaluate(message("hi"), 5).rule_id, ROOM)
        self.assertEqual(rules.evaluate({**other_room, "sender": "@spam:test:8448"}, 5).rule_id, "@spam:test:8448")
        self.assertEqual(rules.evaluate({**other_room, "content": {"body": "Hey BOBBY!"}}, 5, "bobby").rule_id, "name")
        self.assertEqual(rules.evaluate({**other_room, "content": {"body": "bobbyx"}}, 5, "bobby").rule_id,
                         ".m.rule.message")
        self.assertEqual(rules.evaluate(other_room, 100).rule_id, "big")
        self.assertEqual(rules.evaluate(other_room, 99).rule_id, ".m.rule.message")
        self.assertEqual(rules.evaluate({**other_room, "content": {"n": 1}}, 5).rule_id, "prop")
        self.assertNotEqual(rules.evaluate({**other_room, "content": {"n": True}}, 5).rule_id, "prop")


class EvaluatorCacheTests(unittest.TestCase):
    def test_compiled_once_until_invalidated(self) -> None:
        loads: list[str] = []

        async def loader(user_id: str) -> dict[str, list[dict[str, Any]]]:
            loads.append(user_id)
            return default_ruleset(user_id)

        evaluator = PushRuleEvaluator(loader)

        def run(coro: Any) -> Any:
            results: list[Any] = []
            ensureDeferred(coro).addBoth(results.append)
            return results[0]

        for _ in range(3):
            self.assertTrue(run(evaluator.evaluate(BOB, message(), 5)).notify)
        self.assertEqual((loads, evaluator.compilations), ([BOB], 1))
        evaluator.invalidate(BOB)
        run(evaluator.evaluate(BOB, message(), 5))
        self.assertEqual(evaluator.compilations, 2)


# ---------------------------------------------------------------------- over HTTP


class PushRulesTestCase(SyncTestCase):
    def rules_path(self, kind: str, rule_id: str, suffix: str = "", **query: str) -> str:
        path = f"{V3}/pushrules/global/{kind}/{urllib.parse.quote(rule_id, safe='')}{suffix}"
        return path + (f"?{urllib.parse.urlencode(query)}" if query else "")

    def put_rule(self, kind: str, rule_id: str, body: Any, token: str | None = None, **query: str) -> Any:
        return self.make_request("PUT", self.rules_path(kind, rule_id, **query), body, access_token=token or self.bob)

    def ok(self, channel: Any) -> Any:
        self.assertEqual(channel.code, 200, channel.json_body)
        return channel.json_body

    def ruleset(self, token: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = self.ok(self.make_request("GET", f"{V3}/pushrules/", access_token=token or self.bob))
        return body["global"]

    def error(self, channel: Any) -> tuple[int, str]:
        return channel.code, channel.json_body.get("errcode")


class PushRuleApiTests(PushRulesTestCase):
    def test_default_ruleset_over_http(self) -> None:
        """GET /pushrules/ and /pushrules/global/ return the defaults for the user."""
        ruleset = self.ruleset()
        self.assertEqual(ruleset, default_ruleset(BOB))
        self.assertEqual(self.ok(self.make_request("GET", f"{V3}/pushrules/global/", access_token=self.bob)), ruleset)
        self.assertEqual(self.make_request("GET", f"{V3}/pushrules/").code, 401)

    def test_create_order_update_delete(self) -> None:
        """New rules go first; before/after place them; an update keeps its place; delete removes."""
        rule = {"conditions": [{"kind": "event_match", "key": "content.body", "pattern": "beer"}],
                "actions": ["notify"]}
        for rule_id in ("a", "b"):
            self.ok(self.put_rule("override", rule_id, rule))
        self.assertEqual(ids(self.ruleset()["override"])[:4], [".m.rule.master", "b", "a", ".m.rule.suppress_notices"])
        self.ok(self.put_rule("override", "c", rule, before="a"))
        self.ok(self.put_rule("override", "d", rule, after="a"))
        self.ok(self.put_rule("override", "e", rule, before="b", after="d"))  # before wins
        self.assertEqual(ids(self.ruleset()["override"])[1:6], ["e", "b", "c", "a", "d"])
        self.ok(self.put_rule("override", "a", {"actions": []}))  # update in place
        self.assertEqual(ids(self.ruleset()["override"])[1:6], ["e", "b", "c", "a", "d"])
        self.ok(self.put_rule("override", "e", rule, after="d"))  # move
        self.assertEqual(ids(self.ruleset()["override"])[1:6], ["b", "c", "a", "d", "e"])
        got = self.ok(self.make_request("GET", self.rules_path("override", "a"), access_token=self.bob))
        self.assertEqual(got, {"rule_id": "a", "default": False, "enabled": True, "actions": [], "conditions": []})
        self.ok(self.make_request("DELETE", self.rules_path("override", "a"), access_token=self.bob))
        self.assertEqual(self.error(self.make_request("DELETE", self.rules_path("override", "a"),
                                                      access_token=self.bob)), (404, "M_NOT_FOUND"))
        self.assertEqual(self.error(self.make_request("GET", self.rules_path("override", "a"),
                                                      access_token=self.bob)), (404, "M_NOT_FOUND"))
        self.assertNotIn("a", ids(self.ruleset()["override"]))
        self.assertEqual(ids(self.ruleset(self.alice)["override"]), SPEC_OVERRIDE_ORDER)  # per user

    def test_content_room_and_sender_rules(self) -> None:
        self.ok(self.put_rule("content", "cake", {"pattern": "cake*lie", "actions": ["notify"], "conditions": []}))
        self.ok(self.put_rule("room", "!r:test:8448", {"actions": []}))
        self.ok(self.put_rule("sender", "@spam:test:8448", {"actions": ["dont_notify"]}))
        ruleset = self.ruleset()
        self.assertEqual(ruleset["content"], [{"rule_id": "cake", "default": False, "enabled": True,
                                               "actions": ["notify"], "pattern": "cake*lie"}])
        self.assertEqual(ruleset["room"], [{"rule_id": "!r:test:8448", "default": False, "enabled": True, "actions": []}])
        self.assertEqual(ruleset["sender"][0]["actions"], [])  # historical action stripped

    def test_enabled_and_actions(self) -> None:
        """Default rules can be disabled and given new actions, but not created, replaced or deleted."""
        path = self.rules_path("underride", ".m.rule.message", "/enabled")
        self.assertEqual(self.ok(self.make_request("GET", path, access_token=self.bob)), {"enabled": True})
        self.ok(self.make_request("PUT", path, {"enabled": False}, access_token=self.bob))
        self.assertEqual(self.ok(self.make_request("GET", path, access_token=self.bob)), {"enabled": False})
        apath = self.rules_path("underride", ".m.rule.message", "/actions")
        self.ok(self.make_request("PUT", apath, {"actions": ["notify", {"set_tweak": "sound", "value": "x"}]},
                                  access_token=self.bob))
        self.assertEqual(self.ok(self.make_request("GET", apath, access_token=self.bob))["actions"][1]["value"], "x")
        rule = self.ruleset()["underride"][3]
        self.assertEqual((rule["rule_id"], rule["enabled"], rule["default"]), (".m.rule.message", False, True))
        self.assertEqual(self.error(self.put_rule("underride", ".m.rule.message", {"actions": []})),
                         (400, "M_INVALID_PARAM"))
        self.assertEqual(self.error(self.make_request("DELETE", self.rules_path("underride", ".m.rule.message"),
                                                      access_token=self.bob)), (400, "M_INVALID_PARAM"))
        # User rules too; unknown rules are 404 (also a default ID of another kind).
        self.ok(self.put_rule("sender", "@x:test:8448", {"actions": ["notify"]}))
        self.ok(self.make_request("PUT", self.rules_path("sender", "@x:test:8448", "/enabled"), {"enabled": False},
                                  access_token=self.bob))
        self.ok(self.make_request("PUT", self.rules_path("sender", "@x:test:8448", "/actions"), {"actions": []},
                                  access_token=self.bob))
        self.assertEqual(self.ruleset()["sender"][0], {"rule_id": "@x:test:8448", "default": False, "enabled": False,
                                                       "actions": []})
        for kind, rule_id in (("sender", "@nobody:test:8448"), ("override", ".m.rule.message"), ("room", ".m.rule.x")):
            for suffix, body in (("/enabled", {"enabled": True}), ("/actions", {"actions": []})):
                path = self.rules_path(kind, rule_id, suffix)
                self.assertEqual(self.error(self.make_request("PUT", path, body, access_token=self.bob)),
                                 (404, "M_NOT_FOUND"))
                self.assertEqual(self.error(self.make_request("GET", path, access_token=self.bob)),
                                 (404, "M_NOT_FOUND"))

    def test_bad_inputs(self) -> None:
        """Invalid rules, kinds, scopes, anchors and bodies are 400; nothing is stored."""
        ok_rule = {"actions": ["notify"]}
        cases = [
            (self.put_rule("override", ".mine", ok_rule), "M_INVALID_PARAM"),
            (self.put_rule("override", "a/b", ok_rule), "M_INVALID_PARAM"),
            (self.put_rule("override", "a\\b", ok_rule), "M_INVALID_PARAM"),
            (self.put_rule("override", "x" * 300, ok_rule), "M_INVALID_PARAM"),
            (self.put_rule("override", "r", {}), "M_MISSING_PARAM"),
            (self.put_rule("override", "r", {"actions": "notify"}), "M_INVALID_PARAM"),
            (self.put_rule("override", "r", {"actions": ["explode"]}), "M_INVALID_PARAM"),
            (self.put_rule("override", "r", {"actions": [{"value": 1}]}), "M_INVALID_PARAM"),
            (self.put_rule("override", "r", {"actions": [{"set_tweak": "highlight", "value": "yes"}]}),
             "M_INVALID_PARAM"),
            (self.put_rule("override", "r", {"actions": [{"set_tweak": "x", "value": 1.5}]}), "M_INVALID_PARAM"),
            (self.put_rule("override", "r", {"actions": [], "conditions": {}}), "M_INVALID_PARAM"),
            (self.put_rule("override", "r", {"actions": [], "conditions": [{"key": "type"}]}), "M_INVALID_PARAM"),
            (self.put_rule("override", "r", {"actions": [], "conditions": [{"kind": "event_match", "key": "type"}]}),
             "M_INVALID_PARAM"),
            (self.put_rule("override", "r", {"actions": [], "conditions": [
                {"kind": "event_property_is", "key": "k", "value": {"a": 1}}]}), "M_INVALID_PARAM"),
            (self.put_rule("override", "r", {"actions": [], "conditions": [
                {"kind": "room_member_count", "is": "=>2"}]}), "M_INVALID_PARAM"),
            (self.put_rule("override", "r", {"actions": [], "conditions": [{"kind": "x"}] * 40}), "M_INVALID_PARAM"),
            (self.put_rule("content", "r", ok_rule), "M_MISSING_PARAM"),
            (self.put_rule("content", "r", {"actions": [], "pattern": 5}), "M_INVALID_PARAM"),
            (self.put_rule("room", "not-a-room", ok_rule), "M_INVALID_PARAM"),
            (self.put_rule("sender", "nobody", ok_rule), "M_INVALID_PARAM"),
            (self.put_rule("bogus", "r", ok_rule), "M_INVALID_PARAM"),
            (self.put_rule("override", "r", ok_rule, before="missing"), "M_UNKNOWN"),
            (self.put_rule("override", "r", ok_rule, after=".m.rule.master"), "M_UNKNOWN"),
            (self.make_request("PUT", self.rules_path("override", "r"), b"not json", access_token=self.bob),
             "M_NOT_JSON"),
            (self.make_request("PUT", self.rules_path("override", "r"), [1], access_token=self.bob), "M_NOT_JSON"),
            (self.make_request("GET", self.rules_path("bogus", "r"), access_token=self.bob), "M_INVALID_PARAM"),
            (self.make_request("DELETE", self.rules_path("bogus", "r"), access_token=self.bob), "M_INVALID_PARAM"),
            (self.make_request("GET", f"{V3}/pushrules/device/override/r", access_token=self.bob), "M_INVALID_PARAM"),
            (self.make_request("GET", f"{V3}/pushrules/device/", access_token=self.bob), "M_INVALID_PARAM"),
            (self.make_request("PUT", self.rules_path("underride", ".m.rule.message", "/enabled"), {"enabled": "no"},
                               access_token=self.bob), "M_INVALID_PARAM"),
            (self.make_request("PUT", self.rules_path("underride", ".m.rule.message", "/enabled"), {},
                               access_token=self.bob), "M_MISSING_PARAM"),
            (self.make_request("PUT", self.rules_path("underride", ".m.rule.message", "/actions"), {},
                               access_token=self.bob), "M_MISSING_PARAM"),
            (self.make_request("PUT", self.rules_path("underride", ".m.rule.message", "/actions"),
                               {"actions": ["bad"]}, access_token=self.bob), "M_INVALID_PARAM"),
        ]
        for number, (channel, errcode) in enumerate(cases):
            self.assertEqual(self.error(channel), (400, errcode), (number, channel.json_body))
        self.assertEqual(self.ruleset(), default_ruleset(BOB))

    def test_unrecognised_condition_kinds_are_stored(self) -> None:
        """A condition of an unknown kind is accepted (it disables the rule, as the spec says)."""
        self.ok(self.put_rule("override", "future", {"actions": ["notify"], "conditions": [{"kind": "org.x.new"}]}))
        self.assertEqual(self.ruleset()["override"][1]["conditions"], [{"kind": "org.x.new"}])

    @override_config({"ratelimits": {"enabled": True, "admins_exempt": False}})
    def test_changes_are_rate_limited(self) -> None:
        codes = [self.put_rule("override", f"r{i}", {"actions": []}).code for i in range(40)]
        self.assertIn(429, codes)
        self.assertEqual(self.make_request("GET", f"{V3}/pushrules/", access_token=self.bob).code, 200)


class PushRulesSyncTests(PushRulesTestCase):
    def push_rules_events(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return [e for e in body["account_data"]["events"] if e["type"] == "m.push_rules"]

    def test_initial_sync_carries_the_ruleset(self) -> None:
        """An initial sync has m.push_rules (the defaults before any change, once); filters apply."""
        events = self.push_rules_events(self.sync(self.bob))
        self.assertEqual(events, [{"type": "m.push_rules", "content": {"global": default_ruleset(BOB)}}])
        self.ok(self.put_rule("override", "mine", {"actions": []}))
        events = self.push_rules_events(self.sync(self.bob))
        self.assertEqual(len(events), 1)
        self.assertEqual(ids(events[0]["content"]["global"]["override"])[1], "mine")
        body = self.sync(self.bob, filter={"account_data": {"not_types": ["m.push_rules"]}})
        self.assertEqual(self.push_rules_events(body), [])

    def test_change_is_delivered_and_wakes_sync(self) -> None:
        """A change reaches a waiting /sync as m.push_rules account data with the full ruleset."""
        since = self.sync(self.bob)["next_batch"]
        channel = self.sync_channel(self.bob, since=since, timeout=10_000, await_result=False)
        self.pump(0.1)
        self.assertFalse(channel.is_finished())
        self.ok(self.make_request("PUT", self.rules_path("underride", ".m.rule.message", "/enabled"),
                                  {"enabled": False}, access_token=self.bob))
        self.pump(0.1)
        self.assertTrue(channel.is_finished())
        events = self.push_rules_events(channel.json_body)
        self.assertEqual(len(events), 1)
        self.assertFalse(events[0]["content"]["global"]["underride"][3]["enabled"])
        stored = self.ok(self.make_request("GET", f"{V3}/user/{BOB}/account_data/m.push_rules", access_token=self.bob))
        self.assertEqual(stored, {"global": self.ruleset()})
        # Nothing new: an incremental sync does not repeat it.
        self.assertEqual(self.push_rules_events(self.sync(self.bob, since=channel.json_body["next_batch"])), [])

    def test_clients_cannot_write_the_account_data(self) -> None:
        channel = self.make_request("PUT", f"{V3}/user/{BOB}/account_data/m.push_rules", {"global": {}},
                                    access_token=self.bob)
        self.assertEqual(channel.code, 405)


class UnreadCountRuleTests(PushRulesTestCase):
    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.room_id = self.create_room(preset="public_chat")
        self.join(self.room_id, self.bob)

    def unread(self) -> dict[str, int]:
        counts: dict[str, int] = self.sync(self.bob)["rooms"]["join"][self.room_id]["unread_notifications"]
        return counts

    def send_event(self, token: str, content: dict[str, Any], etype: str = "m.room.message") -> None:
        self._txn += 1
        self.ok(self.send(self.room_id, content, token, txn=f"u{self._txn}", etype=etype))

    def test_disabled_message_rule_stops_counting(self) -> None:
        """In a group room .m.rule.message makes messages count; disabling it stops that."""
        self.join(self.room_id, self.carol)
        self.say(self.room_id, self.alice, "one")
        self.assertEqual(self.unread(), {"notification_count": 1, "highlight_count": 0})
        self.ok(self.make_request("PUT", self.rules_path("underride", ".m.rule.message", "/enabled"),
                                  {"enabled": False}, access_token=self.bob))
        self.assertEqual(self.unread(), {"notification_count": 0, "highlight_count": 0})
        self.send_event(self.alice, {"msgtype": "m.text", "body": "hi", "m.mentions": {"user_ids": [BOB]}})
        self.assertEqual(self.unread(), {"notification_count": 1, "highlight_count": 1})

    def test_one_to_one_and_user_rules(self) -> None:
        """Two members: .m.rule.room_one_to_one counts; a sender rule mutes; a content rule highlights."""
        self.say(self.room_id, self.alice, "one")
        self.assertEqual(self.unread()["notification_count"], 1)
        self.ok(self.put_rule("sender", ALICE, {"actions": []}))
        self.assertEqual(self.unread()["notification_count"], 0)
        self.ok(self.put_rule("content", "tea", {"pattern": "tea", "actions": ["notify", {"set_tweak": "highlight"}]}))
        self.say(self.room_id, self.alice, "time for tea?")  # content rules come before sender rules
        self.assertEqual(self.unread(), {"notification_count": 1, "highlight_count": 1})

    def test_room_mention_by_power_only(self) -> None:
        """@room highlights when sent by the creator (enough power), not by an ordinary member."""
        self.join(self.room_id, self.carol)
        mention = {"msgtype": "m.text", "body": "@room", "m.mentions": {"room": True}}
        self.send_event(self.carol, mention)
        self.assertEqual(self.unread(), {"notification_count": 1, "highlight_count": 0})
        self.send_event(self.alice, mention)
        self.assertEqual(self.unread(), {"notification_count": 2, "highlight_count": 1})

    def test_suppressed_events_and_tombstone(self) -> None:
        """Notices and edits do not count; encrypted messages count; a tombstone highlights."""
        self.join(self.room_id, self.carol)
        self.send_event(self.alice, {"msgtype": "m.notice", "body": "bot"})
        self.send_event(self.alice, {"msgtype": "m.text", "body": "* x", "m.new_content": {"body": "x"},
                                     "m.relates_to": {"rel_type": "m.replace", "event_id": "$nothing"}})
        self.send_event(self.alice, {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x"}, "m.room.encrypted")
        self.assertEqual(self.unread(), {"notification_count": 1, "highlight_count": 0})
        self.state(self.room_id, self.alice, "m.room.tombstone", {"body": "moved", "replacement_room": "!new:test:8448"})
        self.assertEqual(self.unread(), {"notification_count": 2, "highlight_count": 1})

    def test_rules_compiled_once_per_change(self) -> None:
        """Syncs reuse the compiled ruleset; a change recompiles it."""
        evaluator = self.hs.features.get(PushRulesService).evaluator
        self.say(self.room_id, self.alice, "one")
        self.unread()
        compiled = evaluator.compilations
        self.unread()
        self.assertEqual(evaluator.compilations, compiled)
        self.ok(self.put_rule("override", "x", {"actions": []}))
        self.assertEqual(self.unread()["notification_count"], 0)  # the new rule matches everything
        self.assertEqual(evaluator.compilations, compiled + 1)
