"""Every shared conformance vector, one pytest case each.

The vectors are the in-repository copy in ``tests/sc_proto/conformance/`` (located by
:mod:`tests.sc_proto.vectors`); ``../shared/conformance/vectors`` is their source, and
:func:`test_copy_matches_shared_vectors` catches drift between the two. Each file's semantics follow ``check_vectors.py``, run here
through :mod:`tests.sc_proto.conformance_adapter`. When the directory is missing the cases skip
locally but fail when ``CI=true``.
"""

from __future__ import annotations

import base64
import copy
import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from tests.sc_proto import conformance_adapter as adapter
from tests.sc_proto.vectors import DEFAULT_VECTORS_DIR, SHARED_VECTORS_DIR, load_vectors, vectors_dir

VECTOR_FILES = {
    "canonical_json.json": 36,
    "signed_json.json": 10,
    "event_signing.json": 33,
    "redaction.json": 135,
    "content_hash.json": 13,
    "event_id.json": 81,
    "room_id.json": 7,
}
TOTAL_VECTORS = 315


def _missing() -> None:
    message = "conformance vectors not found (see tests/sc_proto/vectors.py)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _cases() -> list[Any]:
    if vectors_dir() is None:
        return [pytest.param(None, None, id="vectors-missing")]
    return [pytest.param(name, v, id=v["id"]) for name in VECTOR_FILES for v in load_vectors(name)]


def _seed(b64: str) -> bytes:
    return base64.b64decode(b64 + "=" * (-len(b64) % 4))


def _integral_floats(text: str) -> int | float:
    f = float(text)
    return int(f) if f.is_integer() else f


def _strip_unsigned(obj: Any) -> Any:
    if isinstance(obj, dict):
        obj = dict(obj)
        obj.pop("unsigned", None)
    return obj


def check_canonical(v: dict[str, Any]) -> None:
    obj = json.loads(v["input_text"], parse_float=_integral_floats) if "input_text" in v else v["input"]
    if v.get("expected_error"):
        with pytest.raises(Exception):  # noqa: B017 - the checker accepts any exception
            adapter.canonical_json(obj)
        return
    assert adapter.canonical_json(obj) == v["expected"].encode("utf-8")


def check_signed(v: dict[str, Any]) -> None:
    out = adapter.sign_json(
        copy.deepcopy(v["input"]), v["server_name"], v["key_id"], _seed(v["signing_key_seed"])
    )
    assert out == v["expected"]


def check_event_signing(v: dict[str, Any]) -> None:
    args = (v["server_name"], v["key_id"], _seed(v["signing_key_seed"]))
    assert adapter.sign_event(copy.deepcopy(v["input"]), v["room_version"], *args) == v["expected"]
    # The composition the checker falls back to must agree too.
    ev = copy.deepcopy(v["input"])
    ev["hashes"] = dict(ev.get("hashes", {}), sha256=adapter.compute_content_hash(ev))
    signed = adapter.sign_json(_strip_unsigned(adapter.redact(ev, v["room_version"])), *args)
    assert dict(ev, signatures=signed["signatures"]) == v["expected"]


def check_redaction(v: dict[str, Any]) -> None:
    assert _strip_unsigned(adapter.redact(copy.deepcopy(v["input"]), v["room_version"])) == v["expected"]


def check_content_hash(v: dict[str, Any]) -> None:
    assert adapter.compute_content_hash(copy.deepcopy(v["input"])) == v["expected"]


def check_event_id(v: dict[str, Any]) -> None:
    assert adapter.compute_event_id(copy.deepcopy(v["input"]), v["room_version"]) == v["expected"]
    ref = adapter.compute_reference_hash(copy.deepcopy(v["input"]), v["room_version"])
    assert ref == v["expected_reference_hash"]


def check_room_id(v: dict[str, Any]) -> None:
    assert adapter.compute_room_id(copy.deepcopy(v["input"]), v["room_version"]) == v["expected"]
    event_id = adapter.compute_event_id(copy.deepcopy(v["input"]), v["room_version"])
    assert "!" + event_id[1:] == v["expected"]


CHECKERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "canonical_json.json": check_canonical,
    "signed_json.json": check_signed,
    "event_signing.json": check_event_signing,
    "redaction.json": check_redaction,
    "content_hash.json": check_content_hash,
    "event_id.json": check_event_id,
    "room_id.json": check_room_id,
}


@pytest.mark.parametrize(("name", "vector"), _cases())
def test_vector(name: str | None, vector: dict[str, Any] | None) -> None:
    """Each conformance vector gives the expected output through sc_proto."""
    if name is None or vector is None:
        _missing()
        return
    CHECKERS[name](vector)


def test_vector_counts() -> None:
    """All seven files are present with their documented counts (315 vectors in all)."""
    directory = vectors_dir()
    if directory is None:
        _missing()
        return
    present = {p.name for p in directory.glob("*.json")}
    assert set(VECTOR_FILES) <= present
    counts = {name: len(load_vectors(name)) for name in VECTOR_FILES}
    assert counts == VECTOR_FILES
    assert sum(counts.values()) == TOTAL_VECTORS
    for name in VECTOR_FILES:
        with open(directory / name, encoding="utf-8") as f:
            assert json.load(f)["count"] == VECTOR_FILES[name]


def test_copy_matches_shared_vectors() -> None:
    """The in-repo copy (vectors and checker) equals ``../shared/conformance`` byte for byte, when present."""
    if not SHARED_VECTORS_DIR.is_dir():
        pytest.skip(f"no shared vectors at {SHARED_VECTORS_DIR} (a clone alone): nothing to compare")
    shared = {p.name: p.read_bytes() for p in SHARED_VECTORS_DIR.glob("*.json")}
    copy_ = {p.name: p.read_bytes() for p in DEFAULT_VECTORS_DIR.glob("*.json")}
    assert sorted(copy_) == sorted(shared), "refresh: see tests/sc_proto/conformance/README.md"
    stale = [name for name in shared if shared[name] != copy_[name]]
    checker = SHARED_VECTORS_DIR.parent / "check_vectors.py"
    if (DEFAULT_VECTORS_DIR / "check_vectors.py").read_bytes() != checker.read_bytes():
        stale.append("check_vectors.py")
    assert not stale, f"stale copies {stale}; refresh: see tests/sc_proto/conformance/README.md"


def test_repository_copy_is_used() -> None:
    """The tests read the in-repo copy (not ``../shared``), so a clone alone runs every vector."""
    assert vectors_dir() == DEFAULT_VECTORS_DIR
    assert (DEFAULT_VECTORS_DIR / "README.md").is_file()
