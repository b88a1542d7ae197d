#!/usr/bin/env python3
"""Writes docs/config.md, the configuration reference, from the config section classes.

Usage: ``python scripts/gen_config_docs.py [--check]``. With ``--check`` nothing is written and the
exit code is 1 when docs/config.md is out of date.
"""

from __future__ import annotations

import pathlib
import sys

from homeserver.config.docs import render_config_docs

DOCS_PATH = pathlib.Path(__file__).resolve().parents[1] / "docs" / "config.md"


def main(argv: list[str]) -> int:
    """Writes (or with ``--check`` verifies) docs/config.md; returns the exit code."""
    text = render_config_docs()
    if "--check" in argv:
        current = DOCS_PATH.read_text(encoding="utf-8") if DOCS_PATH.exists() else ""
        if current != text:
            print(f"{DOCS_PATH} is out of date; run scripts/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    DOCS_PATH.write_text(text, encoding="utf-8")
    print(DOCS_PATH)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
