"""Locates and loads the shared protocol conformance vectors (``conformance/vectors/*.json``).

The repository keeps a copy of the vectors in ``tests/sc_proto/conformance/`` (their source and how
to refresh them: ``tests/sc_proto/conformance/README.md``), so a clone alone runs them. The
``SC_CONFORMANCE_DIR`` environment variable names another location when the copy is missing.
Without either, tests that need vectors are skipped, except in CI (``CI=true``), where a missing
vectors directory is a failure. The upstream source, ``../shared/conformance/vectors`` relative to
the repository root, is only read by the drift check (``tests/sc_proto/test_vectors.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VECTORS_DIR = Path(__file__).resolve().parent / "conformance"
SHARED_VECTORS_DIR = REPO_ROOT.parent / "shared" / "conformance" / "vectors"
ENV_VAR = "SC_CONFORMANCE_DIR"


def vectors_dir() -> Path | None:
    """Returns the vectors directory, or ``None`` when it cannot be found."""
    if DEFAULT_VECTORS_DIR.is_dir():
        return DEFAULT_VECTORS_DIR
    configured = os.environ.get(ENV_VAR)
    if configured and Path(configured).is_dir():
        return Path(configured)
    return None


def load_vectors(name: str) -> list[dict[str, Any]]:
    """Returns the vectors of ``<name>.json`` (``name`` may include the ``.json`` suffix).

    Fails (CI) or skips (elsewhere) when the directory is missing; always fails when the named
    file is missing or malformed, or its ``count`` disagrees with its vectors.
    """
    directory = vectors_dir()
    if directory is None:
        message = f"conformance vectors not found at {DEFAULT_VECTORS_DIR} nor via ${ENV_VAR}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message, allow_module_level=True)
    filename = name if name.endswith(".json") else f"{name}.json"
    path = directory / filename
    if not path.is_file():
        pytest.fail(f"conformance vector file missing: {path}")
    with path.open(encoding="utf-8") as f:
        document = json.load(f)
    vectors = document.get("vectors") if isinstance(document, dict) else None
    if not isinstance(vectors, list) or not vectors:
        pytest.fail(f"{path} holds no vectors")
    if document.get("count", len(vectors)) != len(vectors):
        pytest.fail(f"{path}: count says {document['count']}, file holds {len(vectors)}")
    return vectors


def vector_params(name: str) -> list[Any]:
    """``load_vectors`` as ``pytest.param`` objects with readable ids, for ``parametrize``.

    Where vectors may be skipped (not CI), a missing directory yields an empty list, so only the
    parametrized test is skipped rather than the whole module.
    """
    try:
        vectors = load_vectors(name)
    except pytest.skip.Exception:
        return []
    return [pytest.param(v, id=str(v.get("id", i))) for i, v in enumerate(vectors)]
