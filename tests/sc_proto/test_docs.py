"""The worked example in docs/sc_proto.md runs as written (docs are part of the product).

It is run verbatim twice: as a script and line by line through an interactive console, as when
pasted into ``python`` (where an indented block must end with a blank line).
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from types import ModuleType

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "sc_proto.md"


def _runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_doc_example", ROOT / "scripts" / "run_doc_example.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("run_doc_example", module)
    spec.loader.exec_module(module)
    return module


RUNNER = _runner()


def _check_output(printed: str) -> None:
    assert printed.startswith("room !")
    assert "resolved topic: bananas" in printed


def test_worked_example_runs_as_script() -> None:
    """The python block executes as a script and prints the room and the resolved topic."""
    _check_output(RUNNER.run_as_script(RUNNER.extract_example(DOC.read_text())))


def test_worked_example_runs_pasted_into_the_shell() -> None:
    """The same block pasted into the interactive shell runs without a traceback."""
    printed, errors = RUNNER.run_interactively(RUNNER.extract_example(DOC.read_text()))
    assert errors == ""
    _check_output(printed)


def test_console_runner_reports_paste_errors() -> None:
    """A block that would fail when pasted (no blank line after an indented block) is caught."""
    broken = "for i in range(2):\n    x = i\nprint('after', x)\n"
    assert RUNNER.run_as_script(broken) == "after 1\n"
    _, errors = RUNNER.run_interactively(broken)
    assert "SyntaxError" in errors


def test_cli_exit_status(tmp_path: pathlib.Path) -> None:
    """The command line returns 0 for a working example and 1 for one that fails when pasted."""
    good = tmp_path / "good.md"
    good.write_text("```python\nprint('ok')\n```\n")
    bad = tmp_path / "bad.md"
    bad.write_text("```python\nif True:\n    y = 1\nprint(y)\n```\n")
    assert RUNNER.main([str(good)]) == 0
    assert RUNNER.main([str(bad)]) == 1
