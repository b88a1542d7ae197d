"""Shared helpers of the two in-tree PEP 517 build backends (``sc-proto`` and ``secureconnect``).

Both backends build from a *staged* copy: a temporary directory holding a plain setuptools project
(generated ``pyproject.toml`` or ``setup.cfg``) and a copy of the packages it ships, then delegate
to ``setuptools.build_meta`` inside it. The sdists they write are therefore self-contained plain
setuptools projects. See docs/adr/0010-separate-library-distribution.md.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shutil
import tempfile
from collections.abc import Iterator

ROOT = pathlib.Path(__file__).resolve().parents[1]
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".mypy_cache", ".ruff_cache")


def read_version(path: pathlib.Path) -> str:
    """Returns ``__version__ = "..."`` from a ``_version.py`` file."""
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', path.read_text(encoding="utf-8"), flags=re.M)
    if match is None:
        raise RuntimeError(f"no __version__ in {path}")
    return match.group(1)


def copy_package(source: pathlib.Path, target: pathlib.Path) -> None:
    """Copies a package directory without caches or bytecode."""
    shutil.copytree(source, target, ignore=_IGNORE)


@contextlib.contextmanager
def staged(prefix: str) -> Iterator[pathlib.Path]:
    """A temporary staging directory, the current directory while the block runs."""
    previous = os.getcwd()
    directory = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
    try:
        os.chdir(directory)
        yield directory
    finally:
        os.chdir(previous)
        shutil.rmtree(directory, ignore_errors=True)


def absolute(directory: str | None) -> str | None:
    """``directory`` made absolute against the caller's directory (before staging changes it)."""
    return None if directory is None else os.path.abspath(directory)
