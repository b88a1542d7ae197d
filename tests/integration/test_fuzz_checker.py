"""The fuzz suite's own parts, without a server: the spec copy loads, strategies fit, the checker catches.

These run in the fast suite (no ``integration`` mark): a checker that accepted everything would make
the fuzz suite pass whatever the server did.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from hypothesis import find, settings

from tests.integration.fuzzing import Answer, FuzzRequest, check_answer, from_schema
from tests.integration.openapi import Operation, load_operations

POOL = {"roomId": ("!r:it.test",), "userId": ("@u:it.test",), "eventId": ("$e",)}


def op(operation_id: str) -> Operation:
    return next(o for o in load_operations() if o.operation_id == operation_id)


def answer(status: int, body: Any, raw: bytes | None = None) -> Answer:
    return Answer(status, {"content-type": "application/json"}, raw if raw is not None else json.dumps(body).encode())


def request(kind: str = "valid") -> FuzzRequest:
    return FuzzRequest("x", "GET", "/", token="t" if kind == "valid" else None, token_kind=kind)


class SpecCopyTests:
    def test_every_operation_loads_with_refs_resolved(self) -> None:
        """All Client-Server files load, every $ref resolves, and the well-known operations are there."""
        ops = load_operations()
        assert len(ops) >= 160
        ids = {o.operation_id for o in ops}
        assert {"sync", "createRoom", "getTurnServer", "getJoinedMembersByRoom", "login"} <= ids
        assert "$ref" not in json.dumps([o.responses for o in ops] + [o.body_schema for o in ops])
        assert all(o.path.startswith(("/_matrix/", "/.well-known/")) and " " not in o.path for o in ops)

    def test_response_schemas_are_valid_json_schemas(self) -> None:
        """Each documented response schema is itself a valid 2020-12 schema (so validation means something)."""
        for o in load_operations():
            for schema in o.responses.values():
                if schema is not None:
                    jsonschema.Draft202012Validator.check_schema(schema)


class CheckAnswerTests:
    def test_accepts_a_conforming_answer(self) -> None:
        turn = {"username": "1:@u:x", "password": "p", "uris": ["turn:x"], "ttl": 60}
        assert check_answer(op("getTurnServer"), request(), answer(200, turn)) == []
        assert check_answer(op("getTurnServer"), request(), answer(404, {"errcode": "M_NOT_FOUND"})) == []

    def test_flags_server_errors(self) -> None:
        problems = check_answer(op("getTurnServer"), request(), answer(500, {"errcode": "M_UNKNOWN"}))
        assert any("server error 500" in p for p in problems)

    def test_flags_schema_violations(self) -> None:
        """The old turnServer answer ({} with 200) and null profile fields are caught."""
        assert check_answer(op("getTurnServer"), request(), answer(200, {}))
        members = {"joined": {"@u:x": {"display_name": None}}}
        assert check_answer(op("getJoinedMembersByRoom"), request(), answer(200, members))

    def test_flags_bad_error_bodies(self) -> None:
        """Errors must be JSON objects with a string errcode."""
        for bad in (answer(400, None, b"<html>oops</html>"), answer(400, {"error": "x"}), answer(403, ["M_X"]),
                    answer(404, {"errcode": 5})):
            assert check_answer(op("getTurnServer"), request(), bad), bad
            assert check_answer(None, request(), bad), bad

    def test_flags_success_without_a_token(self) -> None:
        """A 2xx to a missing or bogus token on an authenticated operation is a failure."""
        turn = {"username": "1:@u:x", "password": "p", "uris": [], "ttl": 60}
        for kind in ("none", "bogus"):
            assert any("without a valid access token" in p for p in
                       check_answer(op("getTurnServer"), request(kind), answer(200, turn)))

    def test_token_errors_on_uia_endpoints_use_the_error_schema(self) -> None:
        """401 M_MISSING_TOKEN is the standard error, even where the documented 401 is a UIA body."""
        missing = answer(401, {"errcode": "M_MISSING_TOKEN", "error": "no token"})
        assert check_answer(op("deactivateAccount"), request("none"), missing) == []
        assert check_answer(op("deactivateAccount"), request(), answer(401, {"errcode": "M_FORBIDDEN"}))


class StrategyTests:
    def test_draws_both_fitting_and_hostile_bodies(self) -> None:
        """From createRoom's schema the builder draws JSON-encodable bodies that fit it, and ones that do not."""
        schema = op("createRoom").body_schema
        assert schema is not None
        validator = jsonschema.Draft202012Validator(schema)
        quick = settings(max_examples=200, derandomize=True, database=None, deadline=None)
        strategy = from_schema(schema, 0, POOL)
        fitting = find(strategy, lambda v: isinstance(v, dict) and bool(v) and validator.is_valid(v), settings=quick)
        hostile = find(strategy, lambda v: not validator.is_valid(v), settings=quick)
        assert validator.is_valid(json.loads(json.dumps(fitting)))
        assert not validator.is_valid(hostile)

    def test_path_identifiers_come_from_the_pool(self) -> None:
        """A string property named like an identifier sometimes gets the session's real one."""
        quick = settings(max_examples=200, derandomize=True, database=None, deadline=None)
        assert find(from_schema({"type": "string"}, 0, POOL, "room_id"), lambda v: v == "!r:it.test", settings=quick)
