"""Replays every input in ``fuzz_corpus/*.json`` against a real server, on SQLite and on PostgreSQL.

Each file is one input that once failed (the historical failures of issue 12, and whatever
``test_fuzz_api.py`` finds: it writes ``found-*.json`` files here). A file holds::

    {"name": "...", "why": "what went wrong once",
     "request": {"method": "PUT", "target": "/_matrix/client/v3/rooms/{roomId}/state/m.custom/a%00b",
                 "headers": {}, "body": "{\\"x\\": 1}", "auth": "valid" | "none" | "bogus",
                 "transport": "http" | "raw", "operation": "<spec operationId, optional>"},
     "expect": {"status": 400, "errcode": "M_INVALID_PARAM"}}

``{roomId}``, ``{eventId}``, ``{userId}``, ``{peerId}``, ``{roomAlias}`` and ``{deviceId}`` are the fuzz
session's identifiers (percent-encoded); ``{repeat:C:N}`` is the character ``C`` N times. ``expect``
may give ``status`` (a number or a list), ``errcode`` (a string or a list) and ``status_below``; the
answer must also pass the fuzzer's own checks (no 5xx, JSON, ``errcode``, the response schema of
``operation`` when named). The expectations are the same on both databases. ``transport: raw``
sends the bytes on a socket of its own (for requests ``http.client`` cannot send, or answers that
close the connection).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bench.common import ServerProcess
from tests.integration.conftest import ServerFactory
from tests.integration.fuzzing import (
    Answer,
    Client,
    FuzzRequest,
    FuzzSession,
    check_answer,
    raw_exchange,
)
from tests.integration.openapi import Operation, load_operations
from tests.integration.test_fuzz_api import FUZZ_OVERRIDES

CORPUS_DIR = Path(__file__).resolve().parent / "fuzz_corpus"
_REPEAT = re.compile(r"\{repeat:(.):(\d+)\}", re.DOTALL)


def corpus() -> list[dict[str, Any]]:
    """Every corpus entry, sorted by file name."""
    return [json.loads(path.read_text()) for path in sorted(CORPUS_DIR.glob("*.json"))]


def expand(text: str, session: FuzzSession) -> str:
    """Fills in the session's identifiers and the ``{repeat:C:N}`` macros."""
    return _REPEAT.sub(lambda m: m.group(1) * int(m.group(2)), session.expand(text))


def _operations() -> dict[str, Operation]:
    return {op.operation_id: op for op in load_operations()}


def replay(entry: dict[str, Any], session: FuzzSession, client: Client) -> tuple[FuzzRequest, Answer]:
    """Sends one corpus entry's request; returns it (expanded) and the answer."""
    spec = entry["request"]
    token = {"valid": session.token, "none": None, "bogus": "syt_bogus_" + "x" * 20}[spec.get("auth", "valid")]
    body = spec.get("body")
    target = expand(spec["target"], session)
    path, _, query = target.partition("?")
    headers = {k: expand(v, session) for k, v in spec.get("headers", {}).items()}
    request = FuzzRequest(
        spec.get("operation", entry["name"]), spec["method"], path, {}, headers,
        None if body is None else expand(body, session).encode("utf-8", "surrogatepass"),
        token, spec.get("auth", "valid"),
    )
    if query:
        request.path = target  # already encoded: keep it verbatim
    if spec.get("transport") == "raw":
        lines = [f"{request.method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if token is not None:
            lines.append(f"Authorization: Bearer {token}")
        payload = request.body or b""
        if payload or request.method in ("PUT", "POST"):
            lines.append(f"Content-Length: {len(payload)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
        return request, raw_exchange(client.host, client.port, data)
    return request, client.send(request)


def problems_with(entry: dict[str, Any], request: FuzzRequest, answer: Answer) -> list[str]:
    """What is wrong with ``answer`` given the entry's expectations and the fuzzer's checks."""
    expect = entry.get("expect", {})
    problems = check_answer(_operations().get(request.operation), request, answer)
    statuses = expect.get("status")
    if statuses is not None and answer.status not in (statuses if isinstance(statuses, list) else [statuses]):
        problems.append(f"status {answer.status}, expected {statuses}")
    if answer.status >= expect.get("status_below", 500):
        problems.append(f"status {answer.status}, expected below {expect['status_below']}")
    errcodes = expect.get("errcode")
    if errcodes is not None:
        try:
            got = answer.json().get("errcode")
        except (ValueError, AttributeError):
            got = None
        if got not in (errcodes if isinstance(errcodes, list) else [errcodes]):
            problems.append(f"errcode {got!r}, expected {errcodes}")
    return problems


class CorpusFilesTests:
    def test_entries_are_well_formed(self) -> None:
        """Every corpus file parses, names a method and target, and says why it is there."""
        entries = corpus()
        assert len(entries) >= 10
        names = [entry["name"] for entry in entries]
        assert len(names) == len(set(names)), "duplicate corpus names"
        for entry in entries:
            assert entry["why"] and entry["request"]["method"] and entry["request"]["target"].startswith("/")
            assert entry["request"].get("auth", "valid") in ("valid", "none", "bogus")
            assert set(entry.get("expect", {})) <= {"status", "errcode", "status_below"}, entry["name"]

    def test_operations_named_exist_in_the_spec(self) -> None:
        """An entry's ``operation`` (when given) is a spec operationId, so its schema is checked."""
        known = _operations()
        for entry in corpus():
            op = entry["request"].get("operation")
            assert op is None or op in known, (entry["name"], op)


@pytest.mark.integration
@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_corpus_replays(db: str, server_factory: ServerFactory) -> None:
    """Every corpus input gets its expected answer, identically on SQLite and PostgreSQL; the server stays up."""
    server: ServerProcess = server_factory(db=db, overrides=FUZZ_OVERRIDES)
    session = FuzzSession(server.base_url)
    client = Client(server.base_url)
    failures = []
    for entry in corpus():
        request, answer = replay(entry, session, client)
        problems = problems_with(entry, request, answer)
        if problems:
            failures.append(f"{entry['name']}: {answer.status} {answer.body[:200]!r}\n    " + "\n    ".join(problems))
    client.close()
    assert server.process is not None and server.process.poll() is None, "the server died"
    assert session.still_valid(), "a corpus request ended the session"
    assert not failures, "\n".join(failures)
