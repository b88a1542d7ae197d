"""The two distributions' build logic (packaging/): the import rewrite and the staged metadata.

The end-to-end check (build both wheels, install them into fresh environments, start a server) is
the ``wheels`` tox environment (``packaging/check_wheels.py``); these tests are its fast part.
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import shutil
import sys
from types import ModuleType

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"


def _load(path: pathlib.Path, name: str) -> ModuleType:
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


REWRITE = _load(PACKAGING / "rewrite_imports.py", "rewrite_imports")
SERVER_BACKEND = _load(PACKAGING / "secureconnect_backend.py", "secureconnect_backend")
LIBRARY_BACKEND = _load(PACKAGING / "sc-proto" / "sc_proto_backend.py", "sc_proto_backend")
MODULES = {"homeserver", "homeserver.app", "homeserver.app.main", "homeserver.storage", "media", "media.download"}


def rewrite(source: str) -> str:
    return str(REWRITE.rewrite_source(source, MODULES))


class TestRewrite:
    def test_from_imports_move(self) -> None:
        src = "from homeserver.app import main\nfrom media.download import x  # why\nfrom mediax import y\n"
        assert rewrite(src) == (
            "from secureconnect.homeserver.app import main\n"
            "from secureconnect.media.download import x  # why\nfrom mediax import y\n"
        )

    def test_relative_and_third_party_imports_stay(self) -> None:
        src = "from . import media\nfrom .homeserver import x\nimport twisted.web as w\n"
        assert rewrite(src) == src

    def test_import_as_moves_and_bare_import_is_refused(self) -> None:
        assert rewrite("import homeserver.app as app\n") == "import secureconnect.homeserver.app as app\n"
        with pytest.raises(REWRITE.RewriteError):
            rewrite("import homeserver.app\n")

    def test_nested_imports_move(self) -> None:
        src = "def f():\n    if True:\n        from homeserver.app.main import g\n    return g\n"
        assert "from secureconnect.homeserver.app.main import g" in rewrite(src)

    def test_module_strings_move_and_other_strings_stay(self) -> None:
        src = (
            'a = "homeserver.app.main"\nb = f"homeserver.app.{n}"\nc = "homeserver.yaml"\n'
            'd = "media"\ne = "media.download:f"\nf = "homeserver.storage"\n'
        )
        assert rewrite(src) == (
            'a = "secureconnect.homeserver.app.main"\nb = f"secureconnect.homeserver.app.{n}"\n'
            'c = "homeserver.yaml"\nd = "media"\ne = "secureconnect.media.download:f"\n'
            'f = "secureconnect.homeserver.storage"\n'
        )

    def test_logger_names_stay(self) -> None:
        src = 'a = logging.getLogger("homeserver.storage")\nb = logging.getLogger(__name__)\n'
        assert rewrite(src) == (
            'a = logging.getLogger("homeserver.storage")\n'
            'b = logging.getLogger(__name__.removeprefix("secureconnect."))\n'
        )

    def test_line_numbers_and_comments_are_kept(self) -> None:
        src = "# c\nfrom homeserver.app import (\n    main,  # x\n)\nvalue = 1\n"
        out = rewrite(src)
        assert out.count("\n") == src.count("\n") and "# x" in out

    def test_the_whole_tree_moves(self, tmp_path: pathlib.Path) -> None:
        """Every file of the three packages rewrites, compiles and imports nothing by its old name."""
        package = tmp_path / REWRITE.TOP
        for name in REWRITE.PACKAGES:
            shutil.copytree(ROOT / name, package / name, ignore=shutil.ignore_patterns("__pycache__"))
        assert REWRITE.rewrite_tree(tmp_path) > 0
        for path in package.rglob("*.py"):
            source = path.read_text(encoding="utf-8")
            assert REWRITE.leftover_imports(source) == [], path
            ast.parse(source)


class TestServerMetadata:
    def test_staged_setup_cfg(self) -> None:
        """The wheel's metadata: one top-level package, sc-proto pinned, entry point moved."""
        cfg = SERVER_BACKEND.staged_setup_cfg((ROOT / "setup.cfg").read_text(), "9.8.7")
        assert "sc-proto==9.8.7" in cfg
        assert "secureconnect.homeserver.app.main:main" in cfg
        assert "importlinter" not in cfg and "sc_proto =" not in cfg
        assert "secureconnect.homeserver = storage/schema" in cfg

    def test_editable_hooks_are_setuptools(self) -> None:
        """Editable installs (tox's ``package = editable``) stay setuptools' own."""
        from setuptools import build_meta

        assert SERVER_BACKEND.build_editable is build_meta.build_editable


def test_library_dependencies_are_what_sc_proto_imports() -> None:
    """The sc-proto distribution requires exactly the third-party packages sc_proto imports."""
    third_party: set[str] = set()
    stdlib = set(sys.stdlib_module_names)
    for path in (ROOT / "sc_proto").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            third_party |= {n.split(".")[0] for n in names} - stdlib - {"sc_proto", "__future__"}
    distributions = {"nacl": "pynacl", "signedjson": "signedjson"}
    assert {distributions[m] for m in third_party} == {d.split(">")[0] for d in LIBRARY_BACKEND.DEPENDENCIES}
