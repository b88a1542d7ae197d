"""Server-side search (spec "Server Side Search"): indexing, ranking, pagination, context,
visibility, redaction, encryption, hostile terms and bad requests (both databases)."""

from __future__ import annotations

import sqlite3
import urllib.parse
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from homeserver.search.indexer import SearchIndexer, extract_search_text
from homeserver.search.query import MAX_WORDS, SearchBatch, tokenize
from homeserver.storage.stores.search import _PostgresDialect, _SqliteDialect
from sc_proto.events.model import Event
from sc_proto.room_versions import RoomVersions
from tests.homeserver.test_rooms_core import V3
from tests.homeserver.test_visibility import VisibilityTestCase
from tests.unittest import FakeChannel

HOSTILE_TERMS = [
    '"', '""', '"unterminated', 'apple" OR "zzz', "apple OR zzz", "apple AND NOT zzz", "NEAR(apple zzz)",
    "apple*", "*", "^apple", "value:apple", "{value}: apple", "(apple", "apple)", "-apple", "+apple",
    "'; DROP TABLE events; --", "\\", "\\'", "'':*", "apple:*", "apple & zzz", "apple | zzz", "!apple", "<->",
    "apple <-> zzz", "%", "%_", "?", "\u0000", "\ud7ff", "日本語", "🍎", "Ⅻ", "a\u0301", "_", "___",
    "x" * 1000,
]


class SearchTestCase(VisibilityTestCase):
    _txn_counter = 0

    def text(self, room_id: str, body: str, token: str | None = None) -> str:
        """Sends an m.text message (any body: the transaction ID is a counter); returns its ID."""
        SearchTestCase._txn_counter += 1
        channel = self.send(
            room_id, {"msgtype": "m.text", "body": body}, token or self.alice, txn=f"s{SearchTestCase._txn_counter}"
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        event_id: str = channel.json_body["event_id"]
        return event_id

    def search(
        self, term: Any = None, token: str | None = None, next_batch: str | None = None, **criteria: Any
    ) -> FakeChannel:
        room_events = dict(criteria)
        if term is not None:
            room_events["search_term"] = term
        path = f"{V3}/search"
        if next_batch is not None:
            path += "?" + urllib.parse.urlencode({"next_batch": next_batch})
        body = {"search_categories": {"room_events": room_events}}
        return self.make_request("POST", path, body, access_token=token or self.alice)

    def ok(self, term: str, token: str | None = None, **criteria: Any) -> dict[str, Any]:
        channel = self.search(term, token, **criteria)
        self.assertEqual(channel.code, 200, channel.json_body)
        body: dict[str, Any] = channel.json_body["search_categories"]["room_events"]
        return body

    def found(self, term: str, token: str | None = None, **criteria: Any) -> list[str]:
        return [r["result"]["event_id"] for r in self.ok(term, token, **criteria)["results"]]

    def state(self, room_id: str, etype: str, content: dict[str, Any], token: str | None = None) -> str:
        channel = self.make_request(
            "PUT", f"{V3}/rooms/{room_id}/state/{etype}/", content, access_token=token or self.alice
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        event_id: str = channel.json_body["event_id"]
        return event_id

    def indexed(self, room_id: str) -> list[str]:
        head = self.get_success(self.hs.rooms.creator.get_head(room_id))
        assert head is not None
        return self.get_success(self.hs.stores.search.get_indexed_event_ids(head.room.room_nid))


class FindTests(SearchTestCase):
    def test_finds_message_body_with_serialized_event(self) -> None:
        """A message is found by a word of its body; the result is a client event with a positive rank."""
        room_id = self.create_room()
        event_id = self.text(room_id, "The martians have landed")
        self.text(room_id, "nothing to see here")
        body = self.ok("martians")
        self.assertEqual([r["result"]["event_id"] for r in body["results"]], [event_id])
        result = body["results"][0]
        self.assertGreater(result["rank"], 0)
        self.assertEqual(result["result"]["room_id"], room_id)
        self.assertEqual(result["result"]["content"]["body"], "The martians have landed")
        self.assertIn("age", result["result"]["unsigned"])
        self.assertEqual(body["count"], 1)
        self.assertIn("martians", body["highlights"])
        self.assertNotIn("next_batch", body)
        self.assertNotIn("context", result)

    def test_words_are_anded_case_insensitive_and_prefix_matched(self) -> None:
        """Every word must match (any case); each word also matches longer words it starts."""
        room_id = self.create_room()
        both = self.text(room_id, "Weekly MEETING notes")
        self.text(room_id, "weekly report")
        self.assertEqual(self.found("meeting weekly"), [both])
        self.assertEqual(self.found("meet"), [both])
        self.assertIn("meeting", self.ok("meet")["highlights"])

    def test_english_stemming(self) -> None:
        """Both engines stem English: 'running' finds 'run'."""
        room_id = self.create_room()
        event_id = self.text(room_id, "we run daily")
        self.assertEqual(self.found("running"), [event_id])

    def test_finds_room_name_and_topic(self) -> None:
        """content.name of m.room.name and content.topic (and the m.topic text/plain body) of
        m.room.topic are searchable."""
        room_id = self.create_room(name="Quarterly Planning", topic="Budget discussions")
        name_hits = self.ok("quarterly")["results"]
        self.assertEqual([r["result"]["type"] for r in name_hits], ["m.room.name"])
        topic_hits = self.ok("budget")["results"]
        self.assertEqual([r["result"]["type"] for r in topic_hits], ["m.room.topic"])
        topic_id = self.state(room_id, "m.room.topic", {
            "topic": "short", "m.topic": {"m.text": [{"mimetype": "text/html", "body": "<b>htmlonly</b>"},
                                                     {"body": "plainrepresentation"}]},
        })
        self.assertEqual(self.found("plainrepresentation"), [topic_id])
        self.assertEqual(self.found("htmlonly"), [])

    def test_keys_restrict_what_is_searched(self) -> None:
        """keys: [content.name] finds the name but not a message saying the same word."""
        room_id = self.create_room(name="Zeppelin hangar")
        message = self.text(room_id, "zeppelin spotted")
        types = {r["result"]["type"] for r in self.ok("zeppelin", keys=["content.name"])["results"]}
        self.assertEqual(types, {"m.room.name"})
        self.assertEqual(self.found("zeppelin", keys=["content.body"]), [message])
        self.assertEqual(len(self.found("zeppelin", keys=["content.topic", "content.name", "content.body"])), 2)

    def test_other_event_types_are_not_indexed(self) -> None:
        """Only the three spec keys are indexed: not notices' other fields, not custom events, not
        m.room.encrypted."""
        room_id = self.create_room()
        self.send(room_id, {"body": "customword"}, self.alice, txn="c1", etype="org.example.custom")
        self.send(room_id, {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "cipherword", "body": "cipherword"},
                  self.alice, txn="e1", etype="m.room.encrypted")
        self.send(room_id, {"msgtype": "m.text", "body": 42}, self.alice, txn="n1")
        self.assertEqual(self.found("customword"), [])
        self.assertEqual(self.found("cipherword"), [])
        self.assertEqual(len(self.indexed(room_id)), 0)

    def test_search_term_without_words_finds_nothing(self) -> None:
        """A term made only of punctuation has no words: 200 with no results."""
        room_id = self.create_room()
        self.text(room_id, "something")
        body = self.ok("!!! ... ???")
        self.assertEqual((body["results"], body["count"]), ([], 0))

    def test_unicode_words(self) -> None:
        """Non-ASCII words are found whatever their case."""
        room_id = self.create_room()
        event_id = self.text(room_id, "Grüße aus KÖLN")
        self.assertEqual(self.found("köln"), [event_id])

    def test_groups_and_state(self) -> None:
        """groupings by room_id and sender list each result's ID under its group; include_state returns
        each result room's state."""
        room_a = self.create_room(name="A")
        room_b = self.create_room(name="B")
        a1 = self.text(room_a, "grouped one")
        b1 = self.text(room_b, "grouped two")
        body = self.ok("grouped", include_state=True, order_by="recent",
                       groupings={"group_by": [{"key": "room_id"}, {"key": "sender"}]})
        self.assertEqual(body["groups"]["room_id"][room_b], {"results": [b1], "order": 1})
        self.assertEqual(body["groups"]["room_id"][room_a], {"results": [a1], "order": 2})
        self.assertEqual(body["groups"]["sender"]["@alice:test:8448"]["results"], [b1, a1])
        self.assertEqual(set(body["state"]), {room_a, room_b})
        names = [e["content"].get("name") for e in body["state"][room_a] if e["type"] == "m.room.name"]
        self.assertEqual(names, ["A"])


class OrderingTests(SearchTestCase):
    def test_rank_versus_recent(self) -> None:
        """order_by rank puts the better match first; recent puts the newest first; default is rank."""
        room_id = self.create_room()
        strong = self.text(room_id, "apple apple apple")
        weak = self.text(room_id, "apple with a long tail of many other unrelated words about fruit and trees")
        ranked = self.ok("apple", order_by="rank")["results"]
        self.assertEqual([r["result"]["event_id"] for r in ranked], [strong, weak])
        self.assertGreater(ranked[0]["rank"], ranked[1]["rank"])
        self.assertEqual(self.found("apple"), [strong, weak])
        self.assertEqual(self.found("apple", order_by="recent"), [weak, strong])


class PaginationTests(SearchTestCase):
    def paginate(self, term: str, **criteria: Any) -> tuple[list[str], list[dict[str, Any]]]:
        seen: list[str] = []
        pages: list[dict[str, Any]] = []
        next_batch = None
        for _ in range(50):
            channel = self.search(term, next_batch=next_batch, **criteria)
            self.assertEqual(channel.code, 200, channel.json_body)
            body = channel.json_body["search_categories"]["room_events"]
            pages.append(body)
            seen.extend(r["result"]["event_id"] for r in body["results"])
            next_batch = body.get("next_batch")
            if next_batch is None:
                return seen, pages
        raise AssertionError("pagination did not end")

    def test_pages_cover_everything_once_in_both_orders(self) -> None:
        """next_batch pages return every match exactly once, then stop; recent order is newest first."""
        room_id = self.create_room()
        ids = [self.text(room_id, f"pager item {i}") for i in range(23)]
        for order in ("rank", "recent"):
            seen, pages = self.paginate("pager", order_by=order, filter={"limit": 10})
            self.assertEqual([len(p["results"]) for p in pages], [10, 10, 3])
            self.assertEqual(sorted(seen), sorted(ids))
            if order == "recent":
                self.assertEqual(seen, list(reversed(ids)))
            self.assertEqual(pages[0]["count"], 23)

    def test_hidden_rows_are_skipped_not_repeated(self) -> None:
        """Events the filter hides do not shorten pages into duplicates: senders filter over many rows."""
        room_id = self.create_room(preset="public_chat")
        self.membership(room_id, "join", self.bob)
        bob_ids = []
        for i in range(30):
            self.text(room_id, f"mixed a{i}")
            if i % 3 == 0:
                bob_ids.append(self.text(room_id, f"mixed b{i}", self.bob))
        seen, _pages = self.paginate("mixed", order_by="recent", filter={"limit": 4, "senders": ["@bob:test:8448"]})
        self.assertEqual(seen, list(reversed(bob_ids)))
        self.assertEqual(len(set(seen)), len(seen))

    def test_rooms_beyond_one_in_list_are_merged(self) -> None:
        """A user in more rooms than one SQL IN list holds: per-batch results merge into the same order
        and pages as a single batch would give."""
        rooms = [self.create_room() for _ in range(7)]
        ids = [self.text(room, "batched " + "filler " * i) for i, room in enumerate(rooms)]
        single = {order: self.paginate("batched", order_by=order, filter={"limit": 3})[0] for order in ("rank", "recent")}
        self.hs.pool.engine.max_in_list = 3
        for order in ("rank", "recent"):
            seen, pages = self.paginate("batched", order_by=order, filter={"limit": 3})
            self.assertEqual(seen, single[order])
            self.assertEqual(sorted(seen), sorted(ids))
            self.assertEqual([len(p["results"]) for p in pages], [3, 3, 1])
        self.assertEqual(single["recent"], list(reversed(ids)))

    def test_later_events_do_not_join_later_pages(self) -> None:
        """Pages after the first search the snapshot of the first page: new events wait for a new search."""
        room_id = self.create_room()
        for i in range(4):
            self.text(room_id, f"snapshot {i}")
        first = self.ok("snapshot", filter={"limit": 2}, order_by="recent")
        late = self.text(room_id, "snapshot late")
        channel = self.search("snapshot", next_batch=first["next_batch"], filter={"limit": 10}, order_by="recent")
        later = [r["result"]["event_id"] for r in channel.json_body["search_categories"]["room_events"]["results"]]
        self.assertEqual(len(later), 2)
        self.assertNotIn(late, later)
        self.assertIn(late, self.found("snapshot", order_by="recent"))

    def test_bad_next_batch(self) -> None:
        """Garbage tokens and tokens minted for the other ordering are 400."""
        room_id = self.create_room()
        for i in range(3):
            self.text(room_id, f"tok {i}")
        token = self.ok("tok", filter={"limit": 1})["next_batch"]
        self.assertEqual(self.search("tok", next_batch=token, order_by="recent").code, 400)
        for bad in ("nonsense", "rank_1_", "rank_-1_2", "recent_99999999999999999999_1", "x" * 500):
            channel = self.search("tok", next_batch=bad)
            self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_INVALID_PARAM"), bad)


class ContextTests(SearchTestCase):
    def test_context_before_after_tokens_and_profiles(self) -> None:
        """event_context returns the requested events around the result, pagination tokens usable with
        /messages, and the senders' profiles as of the result."""
        self.make_request("PUT", f"{V3}/profile/@alice:test:8448/displayname", {"displayname": "Alice A"},
                          access_token=self.alice)
        room_id = self.create_room()
        before = [self.text(room_id, f"before {i}") for i in range(3)]
        hit = self.text(room_id, "the needle")
        after = [self.text(room_id, f"after {i}") for i in range(3)]
        body = self.ok("needle", event_context={"before_limit": 2, "after_limit": 1, "include_profile": True})
        context = body["results"][0]["context"]
        self.assertEqual([e["event_id"] for e in context["events_before"]], [before[2], before[1]])
        self.assertEqual([e["event_id"] for e in context["events_after"]], [after[0]])
        self.assertEqual(context["profile_info"]["@alice:test:8448"], {"displayname": "Alice A"})
        older = self.make_request(
            "GET", f"{V3}/rooms/{room_id}/messages?dir=b&limit=1&from={context['start']}", access_token=self.alice
        )
        self.assertEqual([e["event_id"] for e in older.json_body["chunk"]], [before[0]])
        newer = self.make_request(
            "GET", f"{V3}/rooms/{room_id}/messages?dir=f&limit=1&from={context['end']}", access_token=self.alice
        )
        self.assertEqual([e["event_id"] for e in newer.json_body["chunk"]], [after[1]])
        self.assertEqual(hit, body["results"][0]["result"]["event_id"])

    def test_default_context_and_no_profile(self) -> None:
        """Defaults: 5 before and 5 after, no profile_info unless asked."""
        room_id = self.create_room()
        for i in range(7):
            self.text(room_id, f"pad {i}")
        self.text(room_id, "centre")
        for i in range(7):
            self.text(room_id, f"tail {i}")
        context = self.ok("centre", event_context={})["results"][0]["context"]
        self.assertEqual((len(context["events_before"]), len(context["events_after"])), (5, 5))
        self.assertNotIn("profile_info", context)

    def test_context_respects_visibility(self) -> None:
        """Context never shows a joined-only room's events from before the searcher joined."""
        room_id = self.room_with("joined")
        self.text(room_id, "secret before bob")
        self.membership(room_id, "join", self.bob)
        self.text(room_id, "visible target")
        context = self.ok("target", self.bob, event_context={"before_limit": 10})["results"][0]["context"]
        bodies = [e["content"].get("body") for e in context["events_before"]]
        self.assertNotIn("secret before bob", bodies)


class VisibilityTests(SearchTestCase):
    def test_not_in_room_finds_nothing(self) -> None:
        """A user who was never in a room cannot find its events, even in a public world-readable room."""
        room_id = self.room_with("world_readable")
        self.text(room_id, "classified plans")
        self.assertEqual(self.found("classified", self.carol), [])
        self.assertEqual(self.found("classified", self.carol, filter={"rooms": [room_id]}), [])

    def test_joined_only_history_hides_events_before_join(self) -> None:
        """history_visibility joined: a member finds only what was sent after they joined."""
        room_id = self.room_with("joined")
        self.text(room_id, "history one")
        self.membership(room_id, "join", self.bob)
        after = self.text(room_id, "history two")
        self.assertEqual(self.found("history", self.bob), [after])
        self.assertEqual(self.ok("history", self.bob)["count"], 1)
        self.assertEqual(len(self.found("history")), 2)

    def test_left_room_searchable_up_to_departure(self) -> None:
        """Spec: rooms the user left are searched, but nothing after they left; invitees find nothing."""
        room_id = self.room_with("world_readable")
        self.membership(room_id, "join", self.bob)
        during = self.text(room_id, "departure during")
        self.membership(room_id, "leave", self.bob)
        self.text(room_id, "departure afterwards")
        self.assertEqual(self.found("departure", self.bob), [during])
        self.membership(room_id, "invite", self.alice, user_id="@dave:test:8448")
        self.assertEqual(self.found("departure", self.dave), [])

    def test_rooms_and_not_rooms_filters(self) -> None:
        """filter.rooms limits the search to those rooms; not_rooms excludes rooms."""
        room_a = self.create_room()
        room_b = self.create_room()
        a = self.text(room_a, "filtered")
        b = self.text(room_b, "filtered")
        self.assertEqual(self.found("filtered", filter={"rooms": [room_a]}), [a])
        self.assertEqual(self.found("filtered", filter={"not_rooms": [room_a]}), [b])
        self.assertEqual(self.found("filtered", filter={"rooms": ["!unknown:test:8448"]}), [])
        self.assertEqual(self.found("filtered", filter={"types": ["m.room.name"]}), [])


class RedactionTests(SearchTestCase):
    def test_redacted_events_are_not_found(self) -> None:
        """A redacted message disappears from results and from the index."""
        room_id = self.create_room()
        event_id = self.text(room_id, "regrettable words")
        self.assertEqual(self.found("regrettable"), [event_id])
        channel = self.make_request("PUT", f"{V3}/rooms/{room_id}/redact/{event_id}/r1", {}, access_token=self.alice)
        self.assertEqual(channel.code, 200, channel.json_body)
        self.pump()
        self.assertEqual(self.found("regrettable"), [])
        self.assertNotIn(event_id, self.indexed(room_id))

    def test_query_time_filter_hides_redacted_even_if_still_indexed(self) -> None:
        """Redacted events are filtered at query time (events.redacted_by) even while an index row remains."""
        room_id = self.create_room()
        event_id = self.text(room_id, "lingering words")
        self.hs.rooms.persister.on_persisted.remove(self.hs.features.get(SearchIndexer).on_persisted)
        self.make_request("PUT", f"{V3}/rooms/{room_id}/redact/{event_id}/r1", {}, access_token=self.alice)
        self.assertIn(event_id, self.indexed(room_id))
        self.assertEqual(self.found("lingering"), [])


class EncryptionTests(SearchTestCase):
    def test_encrypted_room_is_not_indexed(self) -> None:
        """Nothing is indexed in a room created with encryption (plaintext-looking messages included)."""
        room_id = self.create_room(initial_state=[
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
        ], name="Private ciphers")
        self.text(room_id, "plaintext leak")
        self.assertEqual(self.found("plaintext"), [])
        self.assertEqual(self.found("ciphers"), [])
        self.assertEqual(self.indexed(room_id), [])

    def test_enabling_encryption_removes_room_from_search(self) -> None:
        """When a room turns encryption on, its earlier events leave the index too (spec: encrypted rooms
        are not searched) and later ones are never indexed."""
        room_id = self.create_room()
        self.text(room_id, "earlier chatter")
        self.assertEqual(len(self.found("chatter")), 1)
        self.state(room_id, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})
        self.text(room_id, "later chatter")
        self.assertEqual(self.found("chatter"), [])
        self.assertEqual(self.indexed(room_id), [])


class HostileInputTests(SearchTestCase):
    def test_hostile_terms_are_plain_words(self) -> None:
        """FTS5/tsquery operators, quotes, SQL and odd Unicode in search terms never error and never act
        as operators (an OR finds nothing that lacks the other words)."""
        room_id = self.create_room()
        self.text(room_id, "apple pie")
        for term in HOSTILE_TERMS:
            channel = self.search(term)
            self.assertEqual(channel.code, 200, (term, channel.json_body))
        self.assertEqual(self.found('apple" OR "zzz'), [])
        self.assertEqual(self.found("apple OR zzz"), [])
        self.assertEqual(self.found("NEAR(apple zzz)"), [])
        self.assertEqual(len(self.found('"apple"')), 1)
        self.assertEqual(len(self.found("apple*")), 1)
        self.assertEqual(len(self.found("^apple")), 1)
        self.assertEqual(len(self.found("apple:*")), 1)
        self.assertEqual(self.found("value:apple"), [])  # two words, not a column filter

    def test_hostile_message_bodies_index_safely(self) -> None:
        """Message bodies with operators and odd characters index and are found by their words."""
        room_id = self.create_room()
        event_id = self.text(room_id, "\"NEAR(x)\" 'quoted' %_ \\ 🍎 OR zebra* -- ;")
        self.assertEqual(self.found("zebra"), [event_id])


    def test_nul_does_not_break_sending(self) -> None:
        """JSON allows NUL in strings (PostgreSQL text does not); the index replaces it rather than
        failing the persist transaction: the message is stored and found by its words."""
        room_id = self.create_room()
        channel = self.make_request(
            "PUT", f"{V3}/rooms/{room_id}/send/m.room.message/nul",
            b'{"msgtype": "m.text", "body": "odd\\u0000bytes walrus"}', access_token=self.alice,
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        self.assertEqual(self.found("walrus"), [channel.json_body["event_id"]])


class BadRequestTests(SearchTestCase):
    def assert_400(self, body: Any, errcode: str = "M_INVALID_PARAM") -> None:
        channel = self.make_request("POST", f"{V3}/search", body, access_token=self.alice)
        self.assertEqual((channel.code, channel.json_body.get("errcode")), (400, errcode), body)

    def test_missing_search_term(self) -> None:
        self.assert_400({"search_categories": {"room_events": {}}}, "M_MISSING_PARAM")

    def test_unknown_category(self) -> None:
        self.assert_400({"search_categories": {"files": {"search_term": "x"}}}, "M_UNRECOGNIZED")

    def test_malformed_fields(self) -> None:
        """Every field with the wrong type or value is 400 M_INVALID_PARAM."""
        room_events: Any
        for room_events in (
            {"search_term": 5}, {"search_term": None}, {"search_term": "x" * 1001},
            {"search_term": "x", "keys": ["content.secret"]}, {"search_term": "x", "keys": "content.body"},
            {"search_term": "x", "order_by": "oldest"}, {"search_term": "x", "order_by": 1},
            {"search_term": "x", "filter": []}, {"search_term": "x", "filter": {"limit": 0}},
            {"search_term": "x", "filter": {"limit": "5"}}, {"search_term": "x", "filter": {"rooms": "!a:test:8448"}},
            {"search_term": "x", "filter": {"senders": [1]}},
            {"search_term": "x", "event_context": []}, {"search_term": "x", "event_context": {"before_limit": -1}},
            {"search_term": "x", "event_context": {"after_limit": True}},
            {"search_term": "x", "event_context": {"include_profile": "yes"}},
            {"search_term": "x", "include_state": "true"},
            {"search_term": "x", "groupings": {"group_by": [{"key": "type"}]}},
            {"search_term": "x", "groupings": {"group_by": "room_id"}}, {"search_term": "x", "groupings": []},
            [], "room_events",
        ):
            self.assert_400({"search_categories": {"room_events": room_events}})
        self.assert_400({"search_categories": []})

    def test_missing_categories_and_bodies(self) -> None:
        """No search_categories is 400; a body that is not an object is 400; an empty category set is 200."""
        self.assert_400({}, "M_MISSING_PARAM")
        channel = self.make_request("POST", f"{V3}/search", b"[1]", access_token=self.alice)
        self.assertEqual(channel.code, 400)
        channel = self.make_request("POST", f"{V3}/search", b"{not json", access_token=self.alice)
        self.assertEqual((channel.code, channel.json_body["errcode"]), (400, "M_NOT_JSON"))
        ok = self.make_request("POST", f"{V3}/search", {"search_categories": {}}, access_token=self.alice)
        self.assertEqual((ok.code, ok.json_body), (200, {"search_categories": {}}))

    def test_oversized_body_and_auth(self) -> None:
        """Bodies over the route's limit are refused; unauthenticated requests are 401."""
        huge = {"search_categories": {"room_events": {"search_term": "x", "filter": {"pad": "y" * 100_000}}}}
        channel = self.make_request("POST", f"{V3}/search", huge, access_token=self.alice)
        self.assertEqual(channel.code, 413)
        channel = self.make_request("POST", f"{V3}/search", {"search_categories": {}})
        self.assertEqual(channel.code, 401)

    def test_r0_path(self) -> None:
        self.assertEqual(
            self.make_request("POST", "/_matrix/client/r0/search", {"search_categories": {}},
                              access_token=self.alice).code,
            200,
        )


# ---------------------------------------------------------------------- pure units


def _event(etype: str, content: dict[str, Any], state_key: str | None = None) -> Event:
    pdu: dict[str, Any] = {
        "type": etype, "content": content, "sender": "@a:test:8448", "room_id": "!r:test:8448", "depth": 1,
        "origin_server_ts": 1, "prev_events": [], "auth_events": [], "hashes": {"sha256": "x"}, "signatures": {},
    }
    if state_key is not None:
        pdu["state_key"] = state_key
    return Event(pdu, RoomVersions.V11, "$e")


class UnitTests(SearchTestCase):
    def test_extract_search_text(self) -> None:
        """Only the spec keys of the right event shapes are extracted."""
        self.assertEqual(extract_search_text(_event("m.room.message", {"body": "hi"})), ("content.body", "hi"))
        self.assertIsNone(extract_search_text(_event("m.room.message", {"body": "hi"}, state_key="")))
        self.assertIsNone(extract_search_text(_event("m.room.message", {"body": ["x"]})))
        self.assertIsNone(extract_search_text(_event("m.room.message", {"body": "   "})))
        self.assertEqual(extract_search_text(_event("m.room.name", {"name": "N"}, "")), ("content.name", "N"))
        self.assertIsNone(extract_search_text(_event("m.room.name", {"name": "N"}, "x")))
        self.assertIsNone(extract_search_text(_event("m.room.topic", {"topic": 1, "m.topic": "bad"}, "")))
        self.assertEqual(
            extract_search_text(_event("m.room.topic", {"topic": "T", "m.topic": {"m.text": [{"body": "T"}, 3]}}, "")),
            ("content.topic", "T"),
        )
        self.assertIsNone(extract_search_text(_event("m.room.encrypted", {"body": "x"})))

    def test_tokenize(self) -> None:
        """Words are letter/digit runs, case-folded, deduplicated, capped in number and length."""
        self.assertEqual(tokenize('Foo "bar" foo_BAZ o\'neil'), ("foo", "bar", "baz", "o", "neil"))
        self.assertEqual(len(tokenize(" ".join(f"w{i}" for i in range(100)))), MAX_WORDS)
        self.assertEqual(tokenize("x" * 500), ("x" * 64,))

    def test_batch_token_round_trip(self) -> None:
        token = SearchBatch(True, 10, 3)
        self.assertEqual(SearchBatch.decode(token.encode(), True), token)

    def test_postgres_query_quotes_every_word(self) -> None:
        """The tsquery built for words is a conjunction of quoted prefix lexemes."""
        self.assertEqual(_PostgresDialect().match_query(["a", "b'c"]), "'a':* & 'b''c':*")


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_any_text_is_a_valid_fts5_query(text: str) -> None:
    """Property: whatever the user types, the FTS5 query built from its words runs without error."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(value, tokenize = 'porter unicode61 remove_diacritics 2')")
    conn.execute("INSERT INTO t (rowid, value) VALUES (1, ?)", (text.replace("\x00", ""),))
    words = tokenize(text)
    if words:
        conn.execute("SELECT rowid FROM t WHERE t MATCH ?", (_SqliteDialect().match_query(words),)).fetchall()
    conn.close()
