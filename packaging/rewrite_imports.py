"""Moves the server's packages under one top-level package in *built copies* (never the source tree).

The source tree keeps ``homeserver/``, ``federation/`` and ``media/`` as top-level packages with
absolute imports. The server wheel installs them as ``secureconnect.homeserver`` etc. instead, so
this module rewrites, token by token (layout, comments and line numbers kept):

* ``from homeserver.x import y`` -> ``from secureconnect.homeserver.x import y`` (same for the others);
* ``import homeserver.x as y`` -> ``import secureconnect.homeserver.x as y`` (a bare ``import
  homeserver.x`` would bind another name and is refused);
* string and f-string literals that start with a module path of the tree (``"homeserver.app.main"``,
  ``f"homeserver.app.{name}"``, ``importlib.resources.files("homeserver.storage")``), except
  logger names passed to ``getLogger``;
* ``getLogger(__name__)`` -> ``getLogger(__name__.removeprefix("secureconnect."))`` so logger
  names (which the logging config refers to) stay ``homeserver.storage.pool`` etc.

See docs/adr/0010-separate-library-distribution.md.
"""

from __future__ import annotations

import ast
import io
import pathlib
import re
import tokenize

TOP = "secureconnect"
PACKAGES = ("homeserver", "federation", "media")
_STRING_BODY_RE = re.compile(r"([A-Za-z_]\w*)\.([A-Za-z_]\w*)")
_FSTRING_MIDDLE = getattr(tokenize, "FSTRING_MIDDLE", None)
_FSTRING_START = getattr(tokenize, "FSTRING_START", None)
_SKIP = {tokenize.NL, tokenize.COMMENT}


class RewriteError(Exception):
    """The source holds a construct the rewrite cannot move safely."""


def module_names(root: pathlib.Path) -> set[str]:
    """Every module and package path under ``root`` of the three packages (``homeserver.app`` ...)."""
    names: set[str] = set()
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            for i in range(1, len(parts) + 1):
                names.add(".".join(parts[:i]))
    return names


def _string_body_offset(text: str) -> int:
    """Index where a string token's body starts (after its prefix and opening quote(s))."""
    i = 0
    while text[i] not in "'\"":
        i += 1
    quote = text[i : i + 3] if text[i : i + 3] in ('"""', "'''") else text[i]
    return i + len(quote)


def _names_module(body: str, modules: set[str]) -> bool:
    match = _STRING_BODY_RE.match(body)
    return bool(match) and match.group(1) in PACKAGES and f"{match.group(1)}.{match.group(2)}" in modules


def rewrite_source(source: str, modules: set[str], filename: str = "<source>") -> str:
    """Returns ``source`` with its references to the three packages moved under ``secureconnect``.

    Raises:
        RewriteError: a bare ``import homeserver.x`` (without ``as``).
    """
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type not in _SKIP]
    edits: list[tuple[int, int, int, str]] = []  # (row, start col, end col, replacement)
    statement_start = True
    for i, tok in enumerate(tokens):
        prev = tokens[i - 1] if i else None
        if tok.type == tokenize.NAME and statement_start and tok.string == "from":
            nxt = tokens[i + 1]
            if nxt.type == tokenize.NAME and nxt.string in PACKAGES:
                edits.append((*nxt.start, nxt.start[1], f"{TOP}."))
        elif tok.type == tokenize.NAME and statement_start and tok.string == "import":
            edits += _import_edits(tokens, i + 1, filename)
        elif tok.type == tokenize.STRING or (_FSTRING_MIDDLE is not None and tok.type == _FSTRING_MIDDLE):
            if tok.type == tokenize.STRING:
                offset = _string_body_offset(tok.string)
            elif prev is not None and prev.type == _FSTRING_START:
                offset = 0
            else:
                offset = -1
            called = tokens[i - 2].string if i >= 2 else ""
            if offset >= 0 and called != "getLogger" and _names_module(tok.string[offset:], modules):
                edits.append((tok.start[0], tok.start[1] + offset, tok.start[1] + offset, f"{TOP}."))
        elif tok.type == tokenize.NAME and tok.string == "__name__" and i >= 2:
            if tokens[i - 2].string == "getLogger" and tokens[i - 1].string == "(" and tokens[i + 1].string == ")":
                edits.append((*tok.end, tok.end[1], f'.removeprefix("{TOP}.")'))
        statement_start = tok.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT) or (
            tok.type == tokenize.OP and tok.string in (";", ":") and _line_continues_statement(tok, tokens, i)
        )
    lines = source.splitlines(keepends=True)
    for row, start, end, text in sorted(edits, reverse=True):
        line = lines[row - 1]
        lines[row - 1] = line[:start] + text + line[end:]
    return "".join(lines)


def _line_continues_statement(tok: tokenize.TokenInfo, tokens: list[tokenize.TokenInfo], i: int) -> bool:
    # ``x; from a import b`` and ``if TYPE_CHECKING: from a import b`` start a statement after ; or :.
    return i + 1 < len(tokens) and tokens[i + 1].string in ("from", "import") and tokens[i + 1].start[0] == tok.start[0]


def _import_edits(tokens: list[tokenize.TokenInfo], i: int, filename: str) -> list[tuple[int, int, int, str]]:
    edits: list[tuple[int, int, int, str]] = []
    expect_name = True
    while tokens[i].type not in (tokenize.NEWLINE, tokenize.ENDMARKER) and tokens[i].string != ";":
        tok = tokens[i]
        if expect_name and tok.type == tokenize.NAME and tok.string in PACKAGES:
            j = i
            while tokens[j + 1].string == "." or (tokens[j].string == "." and tokens[j + 1].type == tokenize.NAME):
                j += 1
            if tokens[j + 1].string != "as":
                raise RewriteError(f"{filename}:{tok.start[0]}: 'import {tok.string}...' needs 'as NAME' to be moved")
            edits.append((*tok.start, tok.start[1], f"{TOP}."))
        expect_name = tok.string == ","
        i += 1
    return edits


def leftover_imports(source: str) -> list[str]:
    """Absolute imports of the three packages still present (to check a rewritten file)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [f"line {node.lineno}: {n}" for n in names if n.split(".")[0] in PACKAGES]
    return found


def rewrite_tree(root: pathlib.Path) -> int:
    """Rewrites every ``.py`` file under ``root/secureconnect`` in place; returns how many changed.

    ``root`` is a staging directory holding ``secureconnect/{homeserver,federation,media}``.

    Raises:
        RewriteError: a file cannot be moved, or still imports a package by its old name.
    """
    package_root = root / TOP
    modules = module_names(package_root)
    changed = 0
    for path in sorted(package_root.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        new = rewrite_source(source, modules, str(path.relative_to(root)))
        leftovers = leftover_imports(new)
        if leftovers:
            raise RewriteError(f"{path.relative_to(root)} still imports {leftovers}")
        compile(new, str(path), "exec")
        if new != source:
            path.write_text(new, encoding="utf-8")
            changed += 1
    return changed
