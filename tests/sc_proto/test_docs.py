"""The worked example in docs/sc_proto.md runs as written (docs are part of the product)."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "sc_proto.md"


def test_worked_example_runs() -> None:
    """Every python block of docs/sc_proto.md executes and prints the resolved topic."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/sc_proto.md has no python example"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), {"__name__": "docs_example"})
    printed = out.getvalue()
    assert "resolved topic: bananas" in printed
    assert printed.startswith("room !")
