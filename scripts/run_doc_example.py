"""Runs the worked example of ``docs/sc_proto.md`` verbatim, as a script and as pasted into the shell.

Standard library only, so it runs in a bare virtual environment holding just the installed library::

    python scripts/run_doc_example.py docs/sc_proto.md

It prints the example's output twice (script, then interactive console) and exits non-zero when
either run raises or writes a traceback. ``tests/sc_proto/test_docs.py`` and the ``wheels`` tox
environment (``packaging/check_wheels.py``) both use it.
"""

from __future__ import annotations

import code
import contextlib
import io
import pathlib
import re
import sys

_BLOCK_RE = re.compile(r"```python\n(.*?)```", flags=re.S)


def extract_example(doc_text: str) -> str:
    """Returns the first ``python`` fenced block of a Markdown document.

    Raises:
        ValueError: the document has no python block.
    """
    blocks = _BLOCK_RE.findall(doc_text)
    if not blocks:
        raise ValueError("no ```python block in the document")
    return str(blocks[0])


def run_as_script(source: str, filename: str = "example.py") -> str:
    """Executes ``source`` as a script would run; returns what it printed (exceptions propagate)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, filename, "exec"), {"__name__": "__main__"})  # noqa: S102 - running the doc example is the point
    return out.getvalue()


class _Console(code.InteractiveConsole):
    """An interactive console that records whatever it would write to stderr (tracebacks)."""

    def __init__(self) -> None:
        super().__init__({"__name__": "__console__"})
        self.errors: list[str] = []

    def write(self, data: str) -> None:
        self.errors.append(data)


def run_interactively(source: str) -> tuple[str, str]:
    """Feeds ``source`` line by line to an interactive console, as a paste into ``python`` does.

    Returns:
        ``(stdout, errors)``: what the session printed and any tracebacks it showed.
    """
    console = _Console()
    out = io.StringIO()
    more = False
    with contextlib.redirect_stdout(out):
        for line in source.splitlines():
            more = console.push(line)
        if more:
            console.push("")
    return out.getvalue(), "".join(console.errors)


def main(argv: list[str]) -> int:
    """Runs the example of the document ``argv[0]`` both ways; returns the exit status."""
    source = extract_example(pathlib.Path(argv[0]).read_text(encoding="utf-8"))
    print(run_as_script(source), end="")
    printed, errors = run_interactively(source)
    print(printed, end="")
    if errors:
        print(errors, file=sys.stderr, end="")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
