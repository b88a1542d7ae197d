"""PEP 517 backend of the ``sc-proto`` distribution: the repository's ``sc_proto/`` package alone.

Stages ``sc_proto/`` with a generated plain-setuptools ``pyproject.toml`` (name, version from
``sc_proto/_version.py``, the dependencies below) and builds
that with ``setuptools.build_meta``. The wheel holds ``sc_proto`` and nothing else.
"""

from __future__ import annotations

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # packaging/_staging.py (backend-path must stay inside this project)

from _staging import ROOT, StagedBackend, copy_package, read_version  # noqa: E402

NAME = "sc-proto"
SUMMARY = (
    "sc_proto: a sans-I/O Matrix protocol library (identifiers, canonical JSON, room versions, events, "
    "signing, authorization rules, state resolution)"
)
DEPENDENCIES = ["pynacl>=1.5", "signedjson>=1.1.4"]
"""Exactly what sc_proto imports besides the standard library (checked by tests/test_packaging.py)."""

_PYPROJECT = """[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = {name}
version = {version}
description = {summary}
readme = "README.md"
license = "Apache-2.0"
requires-python = ">=3.10"
dependencies = {dependencies}
classifiers = ["Programming Language :: Python :: 3", "Typing :: Typed", "Topic :: Communications :: Chat"]

[tool.setuptools]
include-package-data = false

[tool.setuptools.packages.find]
include = ["sc_proto", "sc_proto.*"]

[tool.setuptools.package-data]
sc_proto = ["py.typed"]
"""


def _stage(directory: pathlib.Path) -> None:
    copy_package(ROOT / "sc_proto", directory / "sc_proto")
    (directory / "README.md").write_text((ROOT / "docs" / "sc_proto.md").read_text(encoding="utf-8"))
    (directory / "pyproject.toml").write_text(
        _PYPROJECT.format(
            name=json.dumps(NAME),
            version=json.dumps(read_version(ROOT / "sc_proto" / "_version.py")),
            summary=json.dumps(SUMMARY),
            dependencies=json.dumps(DEPENDENCIES),
        ),
        encoding="utf-8",
    )


_BACKEND = StagedBackend("sc-proto-", _stage)
get_requires_for_build_wheel = _BACKEND.get_requires_for_build_wheel
get_requires_for_build_sdist = _BACKEND.get_requires_for_build_sdist
prepare_metadata_for_build_wheel = _BACKEND.prepare_metadata_for_build_wheel
build_wheel = _BACKEND.build_wheel
build_sdist = _BACKEND.build_sdist
