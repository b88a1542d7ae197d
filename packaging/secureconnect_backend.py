"""PEP 517 backend of the server distribution, ``secureconnect`` (the repository root's project).

* Editable installs (``pip install -e .``, tox's ``package = editable``) are setuptools' own, from
  the repository as it is: ``setup.cfg`` unchanged, every package importable under its source name.
* Wheels and sdists are built from a staged copy: ``homeserver``, ``federation`` and ``media`` go
  under one top-level package ``secureconnect`` with their imports rewritten
  (:mod:`rewrite_imports`), ``sc_proto`` is left out and required as the ``sc-proto`` distribution
  of the same version instead, and the console script points at the moved module.

See docs/adr/0010-separate-library-distribution.md.
"""

from __future__ import annotations

import configparser
import io
import pathlib
import sys

from setuptools import build_meta

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _staging import ROOT, StagedBackend, copy_package, read_version
from rewrite_imports import PACKAGES, TOP, rewrite_tree

# Editable installs: setuptools, unchanged.
build_editable = build_meta.build_editable
get_requires_for_build_editable = build_meta.get_requires_for_build_editable
prepare_metadata_for_build_editable = build_meta.prepare_metadata_for_build_editable

_PYPROJECT = """[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"
"""
_DROPPED_SECTIONS = ("tool:pytest", "mypy", "options.packages.find")


def staged_setup_cfg(source: str, library_version: str) -> str:
    """The server's ``setup.cfg`` for the staged copy (packages moved, sc_proto required)."""
    config = configparser.ConfigParser(interpolation=None)
    config.optionxform = str  # type: ignore[assignment,method-assign]  # keep option names' case
    config.read_string(source)
    for section in list(config.sections()):
        if section in _DROPPED_SECTIONS or section.startswith(("mypy-", "importlinter")):
            config.remove_section(section)
    config["metadata"]["version"] = library_version
    options = config["options"]
    options["packages"] = "find:"
    requires = [r for r in options["install_requires"].split("\n") if r.strip()]
    options["install_requires"] = "\n" + "\n".join([f"sc-proto=={library_version}", *requires])
    config["options.packages.find"] = {"include": f"\n{TOP}\n{TOP}.*"}
    data = config["options.package_data"]
    moved = {f"{TOP}.{key}" if key in PACKAGES else key: value for key, value in data.items() if key != "sc_proto"}
    config["options.package_data"] = moved
    scripts = config["options.entry_points"]["console_scripts"]
    for package in PACKAGES:
        scripts = scripts.replace(f"= {package}.", f"= {TOP}.{package}.")
    config["options.entry_points"]["console_scripts"] = scripts
    out = io.StringIO()
    config.write(out)
    return out.getvalue()


def stage_server(directory: pathlib.Path) -> None:
    """Writes the staged server project into ``directory``."""
    package = directory / TOP
    package.mkdir()
    (package / "__init__.py").write_text(
        '"""SecureConnect, the homeserver: ``secureconnect.homeserver``, ``.federation`` and ``.media``."""\n',
        encoding="utf-8",
    )
    for name in PACKAGES:
        copy_package(ROOT / name, package / name)
    rewrite_tree(directory)
    (directory / "README.md").write_text((ROOT / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    (directory / "pyproject.toml").write_text(_PYPROJECT, encoding="utf-8")
    version = read_version(ROOT / "sc_proto" / "_version.py")
    cfg = staged_setup_cfg((ROOT / "setup.cfg").read_text(encoding="utf-8"), version)
    (directory / "setup.cfg").write_text(cfg, encoding="utf-8")


_BACKEND = StagedBackend("secureconnect-", stage_server)
get_requires_for_build_wheel = _BACKEND.get_requires_for_build_wheel
get_requires_for_build_sdist = _BACKEND.get_requires_for_build_sdist
prepare_metadata_for_build_wheel = _BACKEND.prepare_metadata_for_build_wheel
build_wheel = _BACKEND.build_wheel
build_sdist = _BACKEND.build_sdist
