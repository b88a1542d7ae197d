"""Fuzzes the Client-Server API of a real server process from the spec's OpenAPI files (issue 12).

For every operation in ``matrix_spec/data/api/client-server/*.yaml`` (except those in
:data:`NOT_FUZZED`), Hypothesis draws :data:`EXAMPLES_PER_OPERATION` requests (see
``tests/integration/fuzzing.py``: valid and hostile path parameters, schema-built and malformed
bodies, valid/bogus/missing tokens) and every answer is checked: no 5xx, JSON bodies, ``errcode``
in errors, the documented response schema. Unknown endpoints get the same error rules. The run is
derandomised (profile ``sc-fuzz``: fixed seed, no example database), so CI sends the same requests
every time, and bounded by :data:`BUDGET_S` per database. Every failing input is written to
``fuzz_corpus/found-*.json``, to be committed with its fix and replayed by ``test_fuzz_corpus.py``.

Run alone: ``pytest -m integration tests/integration/test_fuzz_api.py -s`` (``SC_FUZZ_EXAMPLES``
and ``SC_FUZZ_BUDGET_S`` scale it up for a longer local hunt).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bench.common import ServerProcess
from tests.integration.conftest import ServerFactory
from tests.integration.fuzzing import (
    Answer,
    Client,
    FuzzRequest,
    FuzzSession,
    Tally,
    check_answer,
    is_unrecognized,
    request_strategy,
)
from tests.integration.openapi import Operation, load_operations

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = int(os.environ.get("SC_FUZZ_EXAMPLES", "20"))
# An operation whose first answers are all M_UNRECOGNIZED is one we do not implement: stop there.
UNIMPLEMENTED_PROBES = 3
BUDGET_S = float(os.environ.get("SC_FUZZ_BUDGET_S", "30"))
CORPUS_DIR = Path(__file__).resolve().parent / "fuzz_corpus"
# Federation off: no generated server name can make the server look anything up.
FUZZ_OVERRIDES: dict[str, Any] = {"federation": {"enabled": False}}

NOT_FUZZED: dict[str, str] = {
    # Ending the session would turn the rest of the run into 401s; test_fuzz_corpus.py covers them.
    "logout": "ends the fuzzing session",
    "logout_all": "ends the fuzzing session",
}

settings.register_profile(
    "sc-fuzz",
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)
FUZZ_SETTINGS = settings.get_profile("sc-fuzz")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fuzz_server(request: pytest.FixtureRequest, server_factory: ServerFactory) -> ServerProcess:
    """A server with federation off, once on SQLite and once on PostgreSQL."""
    return server_factory(db=request.param, overrides=FUZZ_OVERRIDES)


def save_failure(session: FuzzSession, request: FuzzRequest, answer: Answer, problems: list[str]) -> Path:
    """Writes a failing input to the corpus (``found-<hash>.json``); returns its path."""
    record = request.to_corpus(session)
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]
    entry = {
        "name": f"found-{digest}",
        "why": f"found by test_fuzz_api: {problems[0]}",
        "request": record,
        "found_status": answer.status,
        "expect": {"status_below": 500},
    }
    CORPUS_DIR.mkdir(exist_ok=True)
    path = CORPUS_DIR / f"found-{digest}.json"
    path.write_text(json.dumps(entry, indent=2, ensure_ascii=True) + "\n")
    return path


class _Run:
    """One database's fuzz run: the client, the session (renewed when a request ended it) and the tally."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.session = FuzzSession(server.base_url)
        self.client = Client(server.base_url)
        self.tally = Tally()
        self.seen: set[tuple[str, int, str]] = set()

    def exchange(self, op: Operation | None, request: FuzzRequest) -> Answer:
        answer = self.client.send(request)
        self.tally.record(request.operation, answer)
        problems = check_answer(op, request, answer)
        signature = (request.operation, answer.status, problems[0].split(":")[0] if problems else "")
        if problems and signature not in self.seen:  # one report (and corpus entry) per kind of failure
            self.seen.add(signature)
            saved = save_failure(self.session, request, answer, problems)
            self.tally.failures.append(({"saved": str(saved), **request.to_corpus(self.session)}, answer.status, problems))
        return answer

    def fuzz(self, op: Operation) -> None:
        sent = [0, 0]  # requests, M_UNRECOGNIZED answers

        @FUZZ_SETTINGS
        @given(request_strategy(op, self.session))
        def one(request: FuzzRequest) -> None:
            if sent[0] >= UNIMPLEMENTED_PROBES and sent[1] == sent[0]:
                return  # not implemented here: the remaining examples would only hear M_UNRECOGNIZED
            answer = self.exchange(op, request)
            sent[0] += 1
            sent[1] += is_unrecognized(answer)

        one()
        if not self.session.still_valid():
            self.session = FuzzSession(self.server.base_url)
            self.tally.sessions_renewed += 1

    def fuzz_unknown_endpoints(self) -> None:
        segment = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/?#"), min_size=1, max_size=12)
        prefixes = ["/_matrix/client/v3/", "/_matrix/client/v1/", "/_matrix/client/r0/", "/_matrix/", "/_sc/", "/"]

        @settings(FUZZ_SETTINGS, max_examples=max(20, EXAMPLES_PER_OPERATION * 5))
        @given(
            st.sampled_from(["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]),
            st.sampled_from(prefixes),
            st.lists(segment, min_size=1, max_size=4),
            st.booleans(),
        )
        def one(method: str, prefix: str, segments: list[str], authed: bool) -> None:
            from tests.integration.fuzzing import _encode_path_value

            path = prefix + "/".join(_encode_path_value(s) for s in segments)
            token = self.session.token if authed else None
            request = FuzzRequest("unknown-endpoint", method, path, body=b"{}" if method in ("PUT", "POST") else None,
                                  token=token, token_kind="valid" if authed else "none")
            self.exchange(None, request)

        one()


def test_client_server_api(fuzz_server: ServerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    """No fuzzed request gets a 5xx, a non-JSON error or an answer outside the spec's response schemas."""
    run = _Run(fuzz_server)
    operations = load_operations()
    # A fixed pseudo-random order: if the time budget cuts the run short, it cuts across all areas.
    order = sorted(operations, key=lambda op: hashlib.sha256(op.operation_id.encode()).digest())
    deadline = time.monotonic() + BUDGET_S
    skipped_for_time: list[str] = []
    for op in order:
        if op.operation_id in NOT_FUZZED:
            continue
        if time.monotonic() > deadline:
            skipped_for_time.append(op.operation_id)
            continue
        run.fuzz(op)
    run.fuzz_unknown_endpoints()
    run.client.close()
    label = "postgres" if "postgres" in str(fuzz_server.config_path.read_text()) else "sqlite"
    with capsys.disabled():
        print("\n" + run.tally.summary(label, len(operations)))
        if os.environ.get("SC_FUZZ_VERBOSE"):
            unimplemented = sorted(run.tally.operations - run.tally.implemented)
            print(f"fuzz[{label}]: answered only M_UNRECOGNIZED: {', '.join(unimplemented)}")
        if skipped_for_time:
            print(f"fuzz[{label}]: time budget reached; not fuzzed: {', '.join(skipped_for_time)}")
    assert run.server.process is not None and run.server.process.poll() is None, "the server died"
    assert not run.tally.failures, "\n".join(
        f"{status} {json.dumps(record)[:600]}\n    " + "\n    ".join(problems)
        for record, status, problems in run.tally.failures[:40]
    ) + f"\n({len(run.tally.failures)} failures)"
