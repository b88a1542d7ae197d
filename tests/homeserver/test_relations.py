"""Relations: indexing, reactions, edits, references, ``/relations`` and bundled aggregations (both
databases). Threads are in ``test_threads.py``."""

from __future__ import annotations

import urllib.parse
from typing import Any

from homeserver.relations.aggregations import RelationAggregations
from homeserver.storage.stores.events import StoredEvent
from tests.homeserver.test_rooms_core import V3
from tests.homeserver.test_sync import SyncTestCase

V1 = "/_matrix/client/v1"


class RelationsTestCase(SyncTestCase):
    """Alice owns a room Bob has joined; helpers send related events and read them back."""

    def prepare(self, reactor: object, clock: object, homeserver: object) -> None:
        super().prepare(reactor, clock, homeserver)
        self.room = self.create_room(preset="public_chat")
        self.join(self.room, self.bob)

    def send_event(self, token: str, content: dict[str, Any], etype: str = "m.room.message", room: str | None = None) -> Any:
        self._txn += 1
        return self.send(room or self.room, content, token, txn=f"r{self._txn}", etype=etype)

    def sent(self, token: str, content: dict[str, Any], etype: str = "m.room.message", room: str | None = None) -> str:
        channel = self.send_event(token, content, etype, room)
        self.assertEqual(channel.code, 200, channel.json_body)
        event_id: str = channel.json_body["event_id"]
        return event_id

    def react(self, token: str, parent: str, key: str) -> Any:
        return self.send_event(
            token, {"m.relates_to": {"rel_type": "m.annotation", "event_id": parent, "key": key}}, "m.reaction"
        )

    def edit(self, token: str, parent: str, body: str) -> str:
        return self.sent(token, {
            "msgtype": "m.text", "body": f"* {body}", "m.new_content": {"msgtype": "m.text", "body": body},
            "m.relates_to": {"rel_type": "m.replace", "event_id": parent},
        })

    def reply_in_thread(self, token: str, root: str, body: str = "in thread") -> str:
        return self.sent(token, {"msgtype": "m.text", "body": body,
                                 "m.relates_to": {"rel_type": "m.thread", "event_id": root}})

    def reference(self, token: str, parent: str) -> str:
        return self.sent(token, {"msgtype": "m.text", "body": "see",
                                 "m.relates_to": {"rel_type": "m.reference", "event_id": parent}})

    def redact(self, token: str, event_id: str) -> str:
        self._txn += 1
        channel = self.make_request(
            "PUT", f"{V3}/rooms/{self.room}/redact/{event_id}/x{self._txn}", {}, access_token=token
        )
        self.assertEqual(channel.code, 200, channel.json_body)
        redaction_id: str = channel.json_body["event_id"]
        return redaction_id

    def relations_channel(self, token: str, parent: str, *path: str, room: str | None = None, **params: Any) -> Any:
        suffix = "".join(f"/{urllib.parse.quote(p, safe='')}" for p in path)
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{V1}/rooms/{room or self.room}/relations/{urllib.parse.quote(parent, safe='')}{suffix}"
        return self.make_request("GET", url + (f"?{query}" if query else ""), access_token=token)

    def relations(self, token: str, parent: str, *path: str, **params: Any) -> dict[str, Any]:
        channel = self.relations_channel(token, parent, *path, **params)
        self.assertEqual(channel.code, 200, channel.json_body)
        body: dict[str, Any] = channel.json_body
        return body

    def get_event(self, token: str, event_id: str) -> dict[str, Any]:
        channel = self.make_request("GET", f"{V3}/rooms/{self.room}/event/{event_id}", access_token=token)
        self.assertEqual(channel.code, 200, channel.json_body)
        body: dict[str, Any] = channel.json_body
        return body

    def bundle(self, token: str, event_id: str) -> dict[str, Any]:
        relations: dict[str, Any] = self.get_event(token, event_id)["unsigned"].get("m.relations", {})
        return relations

    def relation_rows(self) -> list[tuple[Any, ...]]:
        def rows_txn(txn: Any) -> list[tuple[Any, ...]]:
            txn.execute("SELECT event_id, relates_to_id, rel_type, aggregation_key FROM event_relations")
            return txn.fetchall()  # type: ignore[no-any-return]

        return self.get_success(self.hs.pool.run_read("rows", rows_txn))


def _ids(body: dict[str, Any]) -> list[str]:
    return [e["event_id"] for e in body["chunk"]]


class IndexTests(RelationsTestCase):
    def test_each_relation_type_is_indexed(self) -> None:
        """Annotations, edits, references, threads and custom rel_types are children; a rich reply
        (m.in_reply_to without rel_type) is not a relation."""
        parent = self.say(self.room, self.alice, "root")
        self.assertEqual(self.react(self.bob, parent, "👍").code, 200)
        edit = self.edit(self.alice, parent, "root!")
        ref = self.reference(self.bob, parent)
        thread = self.reply_in_thread(self.bob, parent)
        custom = self.sent(self.bob, {"m.relates_to": {"rel_type": "org.example.vote", "event_id": parent}}, "org.example.e")
        reply = self.sent(self.bob, {"msgtype": "m.text", "body": "re", "m.relates_to": {"m.in_reply_to": {"event_id": parent}}})
        ids = _ids(self.relations(self.alice, parent))
        self.assertEqual(ids[:4], [custom, thread, ref, edit])  # newest first
        self.assertNotIn(reply, ids)
        self.assertEqual(len(ids), 5)
        rows = {r[2]: r for r in self.relation_rows()}
        self.assertEqual(rows["m.annotation"][3], "👍")
        self.assertEqual(set(rows), {"m.annotation", "m.replace", "m.reference", "m.thread", "org.example.vote"})

    def test_malformed_relationships_are_ignored(self) -> None:
        """Events with a malformed m.relates_to are accepted but not indexed (spec: ignored)."""
        parent = self.say(self.room, self.alice)
        for relates in ("x", {"rel_type": 5, "event_id": parent}, {"rel_type": "m.reference"},
                        {"rel_type": "m.reference", "event_id": "no-dollar"}, {"rel_type": "", "event_id": parent}):
            self.sent(self.bob, {"body": "b", "m.relates_to": relates})
        self.assertEqual(self.relation_rows(), [])
        self.assertEqual(self.relations(self.alice, parent)["chunk"], [])

    def test_relation_to_an_event_in_another_room_is_not_indexed(self) -> None:
        """A child in room B pointing at an event of room A is not a relation of that event."""
        parent = self.say(self.room, self.alice)
        other = self.create_room()
        self.sent(self.alice, {"body": "x", "m.relates_to": {"rel_type": "m.reference", "event_id": parent}}, room=other)
        self.assertEqual(self.relation_rows(), [])
        self.assertNotIn("m.relations", self.get_event(self.alice, parent)["unsigned"])

    def test_self_relation_of_unknown_parent_is_kept_in_its_room(self) -> None:
        """A relation to an event the server does not have is indexed (the parent may arrive later)
        but serves nothing: /relations of an unknown event is 404."""
        self.sent(self.bob, {"body": "x", "m.relates_to": {"rel_type": "m.reference", "event_id": "$unknown"}})
        self.assertEqual(len(self.relation_rows()), 1)
        self.assertEqual(self.relations_channel(self.alice, "$unknown").code, 404)


class AnnotationTests(RelationsTestCase):
    def test_duplicate_annotation_is_refused(self) -> None:
        """A second identical reaction by the same user is 400 M_DUPLICATE_ANNOTATION and not stored."""
        parent = self.say(self.room, self.alice)
        self.assertEqual(self.react(self.bob, parent, "👍").code, 200)
        again = self.react(self.bob, parent, "👍")
        self.assertEqual((again.code, again.json_body["errcode"]), (400, "M_DUPLICATE_ANNOTATION"))
        self.assertEqual(len(self.relation_rows()), 1)
        self.assertEqual(sum(1 for t, _ in self.room_events(self.room) if t == "m.reaction"), 1)

    def test_other_keys_users_and_types_are_not_duplicates(self) -> None:
        """Another key, another user, or another event type is a different annotation."""
        parent = self.say(self.room, self.alice)
        self.assertEqual(self.react(self.bob, parent, "👍").code, 200)
        self.assertEqual(self.react(self.bob, parent, "👎").code, 200)
        self.assertEqual(self.react(self.alice, parent, "👍").code, 200)
        other_type = self.send_event(
            self.bob, {"m.relates_to": {"rel_type": "m.annotation", "event_id": parent, "key": "👍"}}, "org.example.r"
        )
        self.assertEqual(other_type.code, 200)

    def test_redacted_annotation_can_be_sent_again(self) -> None:
        """After the first reaction is redacted, the same reaction is accepted again."""
        parent = self.say(self.room, self.alice)
        first = self.react(self.bob, parent, "👍").json_body["event_id"]
        self.redact(self.bob, first)
        self.assertEqual(self.react(self.bob, parent, "👍").code, 200)
        self.assertEqual(len(self.relations(self.alice, parent, "m.annotation")["chunk"]), 1)

    def test_annotations_are_not_bundled(self) -> None:
        """m.annotation is not aggregated by the server (spec v1.7+)."""
        parent = self.say(self.room, self.alice)
        self.react(self.bob, parent, "👍")
        self.assertEqual(self.bundle(self.alice, parent), {})

    def test_retried_transaction_is_not_a_duplicate(self) -> None:
        """CHAT-3: retrying the same transaction ID returns the first reaction instead of an error."""
        parent = self.say(self.room, self.alice)
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": parent, "key": "k"}}
        first = self.send(self.room, content, self.bob, txn="same", etype="m.reaction")
        second = self.send(self.room, content, self.bob, txn="same", etype="m.reaction")
        self.assertEqual((first.code, second.code), (200, 200))
        self.assertEqual(first.json_body["event_id"], second.json_body["event_id"])


class EditTests(RelationsTestCase):
    def test_latest_edit_is_bundled(self) -> None:
        """Audit "missing: edit": the most recent edit (by origin_server_ts) is bundled under m.replace;
        the original's content is untouched."""
        parent = self.say(self.room, self.alice, "v1")
        self.edit(self.alice, parent, "v2")
        self.reactor.advance(1)
        latest = self.edit(self.alice, parent, "v3")
        event = self.get_event(self.bob, parent)
        self.assertEqual(event["content"]["body"], "v1")
        replace = event["unsigned"]["m.relations"]["m.replace"]
        self.assertEqual(replace["event_id"], latest)
        self.assertEqual(replace["content"]["m.new_content"]["body"], "v3")
        self.assertEqual(replace["sender"], "@alice:test:8448")

    def test_same_timestamp_edits_break_ties_by_event_id(self) -> None:
        """With equal origin_server_ts the lexicographically largest event ID is the latest."""
        parent = self.say(self.room, self.alice)
        edits = [self.edit(self.alice, parent, f"e{i}") for i in range(3)]
        self.assertEqual(self.bundle(self.alice, parent)["m.replace"]["event_id"], max(edits))

    def test_edits_by_others_are_accepted_but_not_applied(self) -> None:
        """Bob may send an m.replace of Alice's message, but it is never the bundled edit."""
        parent = self.say(self.room, self.alice, "mine")
        own = self.edit(self.alice, parent, "mine, edited")
        self.reactor.advance(1)
        self.edit(self.bob, parent, "hijacked")
        self.assertEqual(self.bundle(self.alice, parent)["m.replace"]["event_id"], own)
        self.assertEqual(len(self.relations(self.alice, parent, "m.replace")["chunk"]), 2)

    def test_invalid_edits_are_ignored(self) -> None:
        """Edits without m.new_content, of another type, or of an edit are not aggregated."""
        parent = self.say(self.room, self.alice)
        self.sent(self.alice, {"body": "*", "m.relates_to": {"rel_type": "m.replace", "event_id": parent}})
        self.sent(self.alice, {"body": "*", "m.new_content": {"body": "x"},
                               "m.relates_to": {"rel_type": "m.replace", "event_id": parent}}, etype="org.example.other")
        self.assertEqual(self.bundle(self.alice, parent), {})
        edit = self.edit(self.alice, parent, "ok")
        self.edit(self.alice, edit, "edit of an edit")
        self.assertEqual(self.bundle(self.alice, parent)["m.replace"]["event_id"], edit)
        self.assertNotIn("m.replace", self.bundle(self.alice, edit))

    def test_redacted_edit_is_no_longer_latest(self) -> None:
        """Redacting the latest edit falls back to the previous one; redacting all removes m.replace."""
        parent = self.say(self.room, self.alice)
        first = self.edit(self.alice, parent, "one")
        self.reactor.advance(1)
        second = self.edit(self.alice, parent, "two")
        self.assertEqual(self.bundle(self.alice, parent)["m.replace"]["event_id"], second)
        self.redact(self.alice, second)
        self.assertEqual(self.bundle(self.alice, parent)["m.replace"]["event_id"], first)
        self.redact(self.alice, first)
        self.assertEqual(self.bundle(self.alice, parent), {})

    def test_redacted_original_bundles_no_edit(self) -> None:
        """A redacted original gets no m.replace, though its edits are not redacted themselves."""
        parent = self.say(self.room, self.alice)
        edit = self.edit(self.alice, parent, "x")
        self.redact(self.alice, parent)
        event = self.get_event(self.alice, parent)
        self.assertEqual(event["content"], {})
        self.assertNotIn("m.relations", event["unsigned"])
        self.assertEqual(self.get_event(self.alice, edit)["content"]["m.new_content"], {"body": "x", "msgtype": "m.text"})

    def test_edits_of_state_events_are_ignored(self) -> None:
        """State events receive no bundle (spec warning) and cannot be edited."""
        state_id = self.state(self.room, self.alice, "m.room.topic", {"topic": "t"})
        self.sent(self.alice, {"body": "x", "m.new_content": {"topic": "u"},
                               "m.relates_to": {"rel_type": "m.replace", "event_id": state_id}}, etype="m.room.topic")
        self.assertNotIn("m.relations", self.get_event(self.alice, state_id)["unsigned"])


class ReferenceTests(RelationsTestCase):
    def test_references_are_bundled_in_order(self) -> None:
        """m.reference bundles a chunk of event IDs, oldest first; a redacted reference drops out."""
        parent = self.say(self.room, self.alice)
        one = self.reference(self.bob, parent)
        two = self.reference(self.alice, parent)
        self.assertEqual(self.bundle(self.bob, parent)["m.reference"], {"chunk": [{"event_id": one}, {"event_id": two}]})
        self.redact(self.bob, one)
        self.assertEqual(self.bundle(self.bob, parent)["m.reference"], {"chunk": [{"event_id": two}]})


class RelationsEndpointTests(RelationsTestCase):
    def test_pagination_backwards_and_forwards(self) -> None:
        """limit/next_batch walk every child once, newest first (dir=b) or oldest first (dir=f)."""
        parent = self.say(self.room, self.alice)
        children = [self.reference(self.bob, parent) for _ in range(5)]
        seen: list[str] = []
        token = None
        for _ in range(5):
            body = self.relations(self.alice, parent, limit=2, **({"from": token} if token else {}))
            seen += _ids(body)
            if token:
                self.assertEqual(body["prev_batch"], token)
            token = body.get("next_batch")
            if token is None:
                break
        self.assertEqual(seen, children[::-1])
        forward = self.relations(self.alice, parent, dir="f", limit=3)
        self.assertEqual(_ids(forward), children[:3])
        rest = self.relations(self.alice, parent, dir="f", limit=3, **{"from": forward["next_batch"]})
        self.assertEqual(_ids(rest), children[3:])
        self.assertNotIn("next_batch", rest)
        self.assertNotIn("prev_batch", forward)

    def test_to_token_bounds_the_page(self) -> None:
        """A page from page 1's start up to page 2's token returns exactly page 1."""
        parent = self.say(self.room, self.alice)
        children = [self.reference(self.bob, parent) for _ in range(4)]
        first = self.relations(self.alice, parent, limit=2)
        bounded = self.relations(self.alice, parent, limit=10, to=first["next_batch"])
        self.assertEqual(_ids(bounded), children[:1:-1])

    def test_sync_token_is_accepted_as_from(self) -> None:
        """A /sync next_batch is a valid from token: children after it are not returned."""
        parent = self.say(self.room, self.alice)
        before = self.reference(self.bob, parent)
        since = self.sync(self.alice)["next_batch"]
        self.reference(self.bob, parent)
        self.assertEqual(_ids(self.relations(self.alice, parent, **{"from": since})), [before])

    def test_rel_type_and_event_type_filters(self) -> None:
        """The path's relType and eventType filter children."""
        parent = self.say(self.room, self.alice)
        self.react(self.bob, parent, "a")
        ref = self.reference(self.bob, parent)
        custom = self.sent(self.bob, {"m.relates_to": {"rel_type": "m.reference", "event_id": parent}}, "org.example.t")
        self.assertEqual(_ids(self.relations(self.alice, parent, "m.reference")), [custom, ref])
        self.assertEqual(_ids(self.relations(self.alice, parent, "m.reference", "m.room.message")), [ref])
        self.assertEqual(self.relations(self.alice, parent, "m.replace")["chunk"], [])

    def test_recurse_follows_indirect_relations(self) -> None:
        """recurse=true adds children of children (with recursion_depth); filters apply to every level."""
        parent = self.say(self.room, self.alice)
        ref = self.reference(self.bob, parent)
        nested = self.reference(self.alice, ref)
        deeper = self.react(self.bob, nested, "x").json_body["event_id"]
        flat = self.relations(self.alice, parent)
        self.assertEqual(_ids(flat), [ref])
        self.assertNotIn("recursion_depth", flat)
        deep = self.relations(self.alice, parent, recurse="true")
        self.assertEqual(_ids(deep), [deeper, nested, ref])
        self.assertEqual(deep["recursion_depth"], 3)
        self.assertEqual(_ids(self.relations(self.alice, parent, "m.reference", recurse="true")), [nested, ref])
        self.assertEqual(self.relations(self.alice, parent, recurse="false")["recursion_depth"], 1)

    def test_redacted_children_are_not_returned(self) -> None:
        """A redacted child breaks the relationship (spec)."""
        parent = self.say(self.room, self.alice)
        child = self.reference(self.bob, parent)
        self.redact(self.bob, child)
        self.assertEqual(self.relations(self.alice, parent)["chunk"], [])

    def test_children_carry_bundled_aggregations(self) -> None:
        """Events served by /relations carry their own bundles (an edited thread reply)."""
        root = self.say(self.room, self.alice)
        reply = self.reply_in_thread(self.bob, root)
        edit = self.edit(self.bob, reply, "edited reply")
        chunk = self.relations(self.alice, root, "m.thread")["chunk"]
        self.assertEqual(chunk[0]["unsigned"]["m.relations"]["m.replace"]["event_id"], edit)

    def test_non_member_gets_403_and_unknown_parent_404(self) -> None:
        """A user who cannot read the room gets 403; an unknown parent or one in another room, 404."""
        parent = self.say(self.room, self.alice)
        self.create_room(self.alice)
        private = self.create_room(self.alice)
        private_event = self.say(private, self.alice)
        self.assertEqual(self.relations_channel(self.carol, private_event, room=private).code, 403)
        self.assertEqual(self.relations_channel(self.alice, "$nope:test:8448").code, 404)
        self.assertEqual(self.relations_channel(self.alice, parent, room=private).code, 404)

    def test_invisible_parent_and_children_are_hidden(self) -> None:
        """With history_visibility joined, a later joiner gets 404 for an earlier parent and does not
        see children sent before they joined."""
        self.state(self.room, self.alice, "m.room.history_visibility", {"history_visibility": "joined"})
        early = self.say(self.room, self.alice)
        self.reference(self.alice, early)
        self.join(self.room, self.carol)
        self.assertEqual(self.relations_channel(self.carol, early).code, 404)
        visible_parent = self.say(self.room, self.alice)
        self.post(self.room, "leave", self.carol)
        self.reference(self.alice, visible_parent)
        self.assertEqual(self.relations(self.carol, visible_parent)["chunk"], [])
        self.assertEqual(len(self.relations(self.alice, visible_parent)["chunk"]), 1)

    def test_bad_inputs(self) -> None:
        """Malformed parameters are 400; no token is 401."""
        parent = self.say(self.room, self.alice)
        for params in ({"limit": "0"}, {"limit": "abc"}, {"limit": "-3"}, {"dir": "x"}, {"from": "garbage"},
                       {"to": "t1-"}, {"recurse": "maybe"}, {"from": "t" + "9" * 19 + "-1"}, {"from": "x" * 600}):
            channel = self.relations_channel(self.alice, parent, **params)
            self.assertEqual(channel.code, 400, (params, channel.json_body))
        self.assertEqual(self.relations_channel(self.alice, parent, room="not-a-room").code, 400)
        self.assertEqual(self.relations_channel(self.alice, "not-an-event").code, 400)
        channel = self.make_request("GET", f"{V1}/rooms/{self.room}/relations/{urllib.parse.quote(parent)}")
        self.assertEqual(channel.code, 401)

    def test_large_limit_is_capped(self) -> None:
        """A huge limit is accepted and capped by the server."""
        parent = self.say(self.room, self.alice)
        self.reference(self.bob, parent)
        self.assertEqual(len(self.relations(self.alice, parent, limit=10**9)["chunk"]), 1)


class BundleEndpointsTests(RelationsTestCase):
    def _edited(self) -> tuple[str, str]:
        parent = self.say(self.room, self.alice, "orig")
        return parent, self.edit(self.alice, parent, "new")

    def test_messages_bundles(self) -> None:
        """/messages bundles the latest edit on the original."""
        parent, edit = self._edited()
        channel = self.make_request("GET", f"{V3}/rooms/{self.room}/messages?dir=b&limit=5", access_token=self.bob)
        events = {e["event_id"]: e for e in channel.json_body["chunk"]}
        self.assertEqual(events[parent]["unsigned"]["m.relations"]["m.replace"]["event_id"], edit)

    def test_context_bundles(self) -> None:
        """/context bundles on the event itself."""
        parent, edit = self._edited()
        channel = self.make_request("GET", f"{V3}/rooms/{self.room}/context/{parent}", access_token=self.bob)
        self.assertEqual(channel.json_body["event"]["unsigned"]["m.relations"]["m.replace"]["event_id"], edit)

    def test_sync_bundles(self) -> None:
        """An initial /sync timeline bundles aggregations (room_id left out of embedded events too)."""
        parent, edit = self._edited()
        timeline = self.sync(self.bob)["rooms"]["join"][self.room]["timeline"]["events"]
        original = next(e for e in timeline if e["event_id"] == parent)
        embedded = original["unsigned"]["m.relations"]["m.replace"]
        self.assertEqual(embedded["event_id"], edit)
        self.assertNotIn("room_id", embedded)

    def test_bundle_is_refreshed_after_a_new_edit(self) -> None:
        """The cached aggregation of an event is dropped when a new relation to it is persisted."""
        parent, first = self._edited()
        self.assertEqual(self.bundle(self.alice, parent)["m.replace"]["event_id"], first)
        self.reactor.advance(1)
        second = self.edit(self.alice, parent, "newer")
        self.assertEqual(self.bundle(self.alice, parent)["m.replace"]["event_id"], second)

    def test_one_read_per_page(self) -> None:
        """SCALE-4: a page of events costs one aggregation read, and a second serve none (cached)."""
        parents = [self.say(self.room, self.alice, f"m{i}") for i in range(5)]
        for parent in parents:
            self.reference(self.bob, parent)
        store = self.hs.features.get(RelationAggregations)._store
        calls: list[int] = []
        original = store.get_aggregation_rows

        async def counting(parents_arg: Any) -> Any:
            calls.append(len(parents_arg))
            return await original(parents_arg)

        store.get_aggregation_rows = counting
        path = f"{V3}/rooms/{self.room}/messages?dir=b&limit=10"
        self.make_request("GET", path, access_token=self.alice)
        self.assertEqual(len(calls), 1)
        self.make_request("GET", path, access_token=self.alice)
        self.assertEqual(len(calls), 1)


class AggregationCacheTests(RelationsTestCase):
    def test_invalidation_during_a_read_is_not_cached(self) -> None:
        """A summary read that races an invalidation of the same event is returned but not cached."""
        parent = self.say(self.room, self.alice)
        aggregations = self.hs.features.get(RelationAggregations)
        stored: StoredEvent = self.get_success(self.hs.rooms.events.get_event(parent))
        store = aggregations._store
        original = store.get_aggregation_rows

        async def racing(parents_arg: Any) -> Any:
            rows = await original(parents_arg)
            aggregations.invalidate([parent])
            return rows

        store.get_aggregation_rows = racing
        self.get_success(aggregations.get_summaries([stored]))
        self.assertNotIn(parent, aggregations._cache)
        store.get_aggregation_rows = original
        self.get_success(aggregations.get_summaries([stored]))
        self.assertIn(parent, aggregations._cache)
