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
from collections.abc import Callable, Iterator
from typing import Any

from setuptools import build_meta

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


class StagedBackend:
    """The PEP 517 wheel/sdist hooks of a backend that builds from a staged copy.

    ``stage(directory)`` writes the plain setuptools project into the (current) staging directory;
    each hook then delegates to ``setuptools.build_meta`` there. A backend module exposes the bound
    methods under the hook names (``build_wheel = backend.build_wheel``...).

    Args:
        prefix: the staging directory's name prefix (``"sc-proto-"``).
        stage: fills a staging directory.
    """

    def __init__(self, prefix: str, stage: Callable[[pathlib.Path], None]) -> None:
        self._prefix = prefix
        self._stage = stage

    def get_requires_for_build_wheel(self, config_settings: dict[str, Any] | None = None) -> list[str]:
        """No requirements beyond ``build-system.requires``."""
        return []

    def get_requires_for_build_sdist(self, config_settings: dict[str, Any] | None = None) -> list[str]:
        """No requirements beyond ``build-system.requires``."""
        return []

    def prepare_metadata_for_build_wheel(
        self, metadata_directory: str, config_settings: dict[str, Any] | None = None
    ) -> str:
        """Writes the wheel's ``.dist-info`` from the staged project."""
        target = absolute(metadata_directory)
        with staged(self._prefix) as directory:
            self._stage(directory)
            return str(build_meta.prepare_metadata_for_build_wheel(target, config_settings))

    def build_wheel(
        self, wheel_directory: str, config_settings: dict[str, Any] | None = None, metadata_directory: str | None = None
    ) -> str:
        """Builds the wheel of the staged project into ``wheel_directory``."""
        target = absolute(wheel_directory)
        with staged(self._prefix) as directory:
            self._stage(directory)
            return str(build_meta.build_wheel(target, config_settings))

    def build_sdist(self, sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
        """Builds a self-contained sdist (the staged plain setuptools project)."""
        target = absolute(sdist_directory)
        with staged(self._prefix) as directory:
            self._stage(directory)
            return str(build_meta.build_sdist(target, config_settings))
