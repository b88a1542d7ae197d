"""Checks on the repository itself: the README contract and CI wiring."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _fenced_blocks_after(text: str, heading: str) -> list[str]:
    section = text.split(heading, 1)[1]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run must run exactly the README's test command (the README contract)."""
    readme = (ROOT / "README.md").read_text()
    command = _fenced_blocks_after(readme, "## Testing")[0].strip()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines


def test_readme_quickstart_script_exists() -> None:
    """The README's first command points at a script that exists and is executable."""
    readme = (ROOT / "README.md").read_text()
    command = _fenced_blocks_after(readme, "## Quick start")[0].strip()
    script = ROOT / command.lstrip("./")
    assert script.is_file()
    assert script.stat().st_mode & 0o111


def test_relative_links_in_docs_resolve() -> None:
    """Every relative link in README.md and docs/*.md points at a file that exists (docs are product)."""
    broken = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (doc.parent / target).resolve().exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not broken, broken
