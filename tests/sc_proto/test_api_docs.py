"""docs/sc_proto_api.md is generated from the docstrings of ``sc_proto.__all__`` and kept current."""

from __future__ import annotations

import importlib.util
import pathlib
from types import ModuleType

import pytest

import sc_proto

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_sc_proto_api", ROOT / "scripts" / "gen_sc_proto_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def test_api_reference_is_current() -> None:
    """The committed reference matches the docstrings; regenerate with scripts/gen_sc_proto_api.py."""
    current = (ROOT / "docs" / "sc_proto_api.md").read_text(encoding="utf-8")
    assert current == GEN.render_api_docs(), "run: python scripts/gen_sc_proto_api.py"


def test_every_public_name_is_documented() -> None:
    """Each name of ``__all__`` has a section in the reference, and public callables have docstrings."""
    text = GEN.render_api_docs()
    for name in sc_proto.__all__:
        assert f"### `{name}`" in text, name
        obj = getattr(sc_proto, name)
        if callable(obj) and getattr(obj, "__module__", "").startswith("sc_proto"):
            assert (obj.__doc__ or "").strip(), f"{name} has no docstring"


def test_check_mode_detects_stale_file(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--check`` exits 1 when the file differs and 0 when it is current."""

    target = tmp_path / "api.md"
    monkeypatch.setattr(GEN, "DOCS_PATH", target)
    target.write_text("stale\n", encoding="utf-8")
    assert GEN.main(["--check"]) == 1
    target.write_text(GEN.render_api_docs(), encoding="utf-8")
    assert GEN.main(["--check"]) == 0
