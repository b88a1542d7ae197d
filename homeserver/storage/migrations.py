"""Schema creation and upgrades from numbered SQL files.

Layout (under ``homeserver/storage/schema/``, found with :mod:`importlib.resources`):

* ``full/NNNN.sql``: a snapshot of the whole schema at version ``NNNN`` (it includes every delta
  numbered ``<= NNNN``). ``full/NNNN.sqlite.sql``/``full/NNNN.postgres.sql`` are applied after it on
  that engine only, when a difference cannot be written portably.
* ``delta/NNNN/NN_name.sql``: portable changes that take the schema to version ``NNNN``, applied in
  file-name order. ``NN_name.sqlite.sql``/``NN_name.postgres.sql`` run on one engine only; ``NN_name.py``
  defines ``run(txn, engine)`` for changes SQL cannot express.

Theory of operation (all inside one write transaction, so a failed upgrade changes nothing):

* The code's schema version is the highest number among ``full/`` and ``delta/``; adding a table later
  means dropping a file into ``delta/NNNN/`` (a new ``NNNN`` bumps the version).
* A fresh database gets the newest full snapshot, then every later delta. The deltas the snapshot
  already contains are recorded in ``applied_deltas`` as applied.
* An existing database gets every delta file of its own version and later ones that is not in
  ``applied_deltas`` (so a delta added to the current version during development is picked up too).
* ``schema_compat_version`` holds the oldest code version that can still use the database. A database
  whose compat version is newer than the code's schema version is refused; a database that is newer but
  still compatible (a rollback after an upgrade) is used as is. Raise :data:`SCHEMA_COMPAT_VERSION`
  whenever a delta makes the schema unusable for older code (dropping or renaming something it reads).

Statements in ``.sql`` files are split on ``;`` outside quotes and comments; bodies containing ``;``
(triggers) belong in a ``.py`` delta.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import logging
import re
from collections.abc import Callable
from importlib.resources.abc import Traversable
from typing import Any

from homeserver.storage.engines.base import DatabaseEngine
from homeserver.storage.pool import DatabasePool, Txn

logger = logging.getLogger(__name__)

#: Code built against schema version ``>= SCHEMA_COMPAT_VERSION`` can use a database this code prepared.
SCHEMA_COMPAT_VERSION = 1

_ENGINES = ("sqlite", "postgres")
_VERSION_DIR_RE = re.compile(r"^\d{4}$")
_FULL_RE = re.compile(r"^(\d{4})(?:\.(sqlite|postgres))?\.sql$")
_DELTA_RE = re.compile(r"^\d{2,}_[a-z0-9_]+(?:\.(sqlite|postgres))?\.(sql|py)$")
_BOOKKEEPING_TABLES = ("schema_version", "schema_compat_version", "applied_deltas")


class SchemaError(Exception):
    """The schema files or the database's schema bookkeeping are unusable."""


class IncompatibleSchemaError(SchemaError):
    """The database was upgraded by newer code that this code cannot work with."""


def _is_ignored(name: str) -> bool:
    return name.startswith((".", "__")) or name.endswith((".md", ".pyc"))


@dataclasses.dataclass(frozen=True)
class DeltaFile:
    """One delta file that applies on the engine it was listed for."""

    version: int
    name: str
    path: Traversable


@dataclasses.dataclass(frozen=True)
class SchemaFiles:
    """A directory of schema files (the packaged one, or a test fixture).

    Attributes:
        root: Directory holding ``full/`` and (optionally) ``delta/``.
        compat_version: Written to ``schema_compat_version`` when this code upgrades a database.
        max_version: Pretend the code stops at this version (tests of upgrades); ``None`` for all.
    """

    root: Traversable
    compat_version: int = SCHEMA_COMPAT_VERSION
    max_version: int | None = None

    @classmethod
    def packaged(cls) -> SchemaFiles:
        """The schema shipped in ``homeserver/storage/schema/``."""
        return cls(importlib.resources.files("homeserver.storage") / "schema")

    def _versions(self, kind: str) -> dict[int, Traversable]:
        folder = self.root / kind
        if not folder.is_dir():
            return {}
        found: dict[int, Traversable] = {}
        for entry in folder.iterdir():
            if _is_ignored(entry.name):
                continue
            if kind == "delta":
                if not (entry.is_dir() and _VERSION_DIR_RE.match(entry.name)):
                    raise SchemaError(f"unexpected entry in schema delta/: {entry.name}")
                version = int(entry.name)
            else:
                match = _FULL_RE.match(entry.name)
                if not match:
                    raise SchemaError(f"unexpected file in schema full/: {entry.name}")
                version = int(match.group(1))
            if self.max_version is None or version <= self.max_version:
                found[version] = entry
        return found

    @property
    def code_version(self) -> int:
        """The schema version this code expects: the highest number in ``full/`` or ``delta/``."""
        versions = set(self._versions("full")) | set(self._versions("delta"))
        if not versions:
            raise SchemaError("no schema files found")
        return max(versions)

    def full_versions(self) -> list[int]:
        """Versions with a full snapshot, ascending."""
        return sorted(self._versions("full"))

    def full_snapshot(self, version: int, engine_name: str) -> list[Traversable]:
        """The files of snapshot ``version`` for ``engine_name``: portable first, then the engine's."""
        folder = self.root / "full"
        portable = folder / f"{version:04d}.sql"
        if not portable.is_file():
            raise SchemaError(f"no full schema snapshot {version:04d}.sql")
        files = [portable]
        variant = folder / f"{version:04d}.{engine_name}.sql"
        if variant.is_file():
            files.append(variant)
        return files

    def deltas(self, version: int, engine_name: str) -> list[DeltaFile]:
        """The delta files of ``version`` that apply on ``engine_name``, in name order."""
        folder = self._versions("delta").get(version)
        if folder is None:
            return []
        result = []
        for entry in folder.iterdir():
            if _is_ignored(entry.name):
                continue
            match = _DELTA_RE.match(entry.name)
            if not match or not entry.is_file():
                raise SchemaError(f"bad schema delta file name: delta/{version:04d}/{entry.name}")
            only_engine = match.group(1)
            if only_engine is None or only_engine == engine_name:
                result.append(DeltaFile(version, entry.name, entry))
        return sorted(result, key=lambda d: d.name)


def split_sql(text: str) -> list[str]:
    """Split a SQL script into statements on ``;`` outside quotes and comments; drop comments.

    Args:
        text: The script.

    Returns:
        The non-empty statements without their terminating ``;``.
    """
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in ("'", '"'):
            end = text.find(ch, i + 1)
            while end != -1 and text.startswith(ch, end + 1):  # doubled quote is an escaped quote
                end = text.find(ch, end + 2)
            end = n if end == -1 else end + 1
            current.append(text[i:end])
            i = end
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end == -1 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end == -1 else end + 2
            current.append(" ")
        elif ch == ";":
            statements.append("".join(current))
            current = []
            i += 1
        else:
            current.append(ch)
            i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip()]


def _execute_script(txn: Txn, text: str) -> None:
    for statement in split_sql(text):
        txn.execute(statement)


def _load_python_delta(delta: DeltaFile) -> Callable[[Txn, DatabaseEngine], Any]:
    source = delta.path.read_text(encoding="utf-8")
    label = f"<schema delta {delta.version:04d}/{delta.name}>"
    namespace: dict[str, Any] = {"__name__": f"homeserver.storage.schema.delta_{delta.version:04d}"}
    # The file ships with this package (it is our code, not input), so executing it is safe.
    exec(compile(source, label, "exec"), namespace)  # noqa: S102
    run = namespace.get("run")
    if not callable(run):
        raise SchemaError(f"schema delta {delta.version:04d}/{delta.name} has no run(txn, engine) function")
    return run  # type: ignore[no-any-return]  # checked callable above


def _apply_delta_txn(txn: Txn, engine: DatabaseEngine, delta: DeltaFile) -> None:
    logger.info("applying schema delta %04d/%s", delta.version, delta.name)
    if delta.name.endswith(".py"):
        _load_python_delta(delta)(txn, engine)
    else:
        _execute_script(txn, delta.path.read_text(encoding="utf-8"))
    txn.execute("INSERT INTO applied_deltas (version, file) VALUES (?, ?)", (delta.version, delta.name))


def _create_from_snapshot_txn(
    txn: Txn, engine: DatabaseEngine, schema: SchemaFiles, snapshot_version: int | None
) -> int:
    """Apply a full snapshot to an empty database; return its version."""
    existing = engine.list_tables(txn)
    if existing:
        raise SchemaError(
            f"database has tables ({', '.join(existing[:5])}) but no schema_version: not a SecureConnect database"
        )
    available = schema.full_versions()
    if snapshot_version is None:
        candidates = [v for v in available if v <= schema.code_version]
        if not candidates:
            raise SchemaError("no full schema snapshot to start a new database from")
        snapshot_version = candidates[-1]
    elif snapshot_version not in available:
        raise SchemaError(f"no full schema snapshot {snapshot_version:04d}")
    logger.info("creating database schema from snapshot %04d", snapshot_version)
    for path in schema.full_snapshot(snapshot_version, engine.name):
        _execute_script(txn, path.read_text(encoding="utf-8"))
    txn.execute("INSERT INTO schema_version (version) VALUES (?)", (snapshot_version,))
    txn.execute("INSERT INTO schema_compat_version (compat_version) VALUES (?)", (schema.compat_version,))
    # The snapshot already contains every delta up to its version.
    for version in range(1, snapshot_version + 1):
        for delta in schema.deltas(version, engine.name):
            txn.execute("INSERT INTO applied_deltas (version, file) VALUES (?, ?)", (version, delta.name))
    return snapshot_version


def _read_versions_txn(txn: Txn) -> tuple[int, int]:
    txn.execute("SELECT version FROM schema_version")
    rows = txn.fetchall()
    txn.execute("SELECT compat_version FROM schema_compat_version")
    compat_rows = txn.fetchall()
    if len(rows) != 1 or len(compat_rows) != 1:
        raise SchemaError("schema_version/schema_compat_version must hold exactly one row each")
    version, compat = rows[0][0], compat_rows[0][0]
    if not isinstance(version, int) or not isinstance(compat, int):
        raise SchemaError("schema_version/schema_compat_version hold non-integer values")
    return version, compat


def prepare_database_txn(
    txn: Txn, engine: DatabaseEngine, schema: SchemaFiles | None = None, snapshot_version: int | None = None
) -> int:
    """Create or upgrade the schema in ``txn`` (see the module docstring).

    Args:
        txn: A write transaction.
        engine: The database's engine (chooses engine-specific files).
        schema: The schema files; the packaged ones by default.
        snapshot_version: For a fresh database, start from this full snapshot instead of the newest
            (used to check that an old snapshot plus deltas equals the newest snapshot).

    Returns:
        The database's schema version afterwards.

    Raises:
        IncompatibleSchemaError: the database's compat version is newer than the code.
        SchemaError: bad schema files, a non-empty foreign database, or broken bookkeeping.
    """
    schema = schema or SchemaFiles.packaged()
    code_version = schema.code_version
    if not engine.table_exists(txn, "schema_version"):
        db_version = _create_from_snapshot_txn(txn, engine, schema, snapshot_version)
        compat = schema.compat_version
    else:
        db_version, compat = _read_versions_txn(txn)
        if compat > code_version:
            raise IncompatibleSchemaError(
                f"database schema version {db_version} needs code with schema version >= {compat},"
                f" but this code has schema version {code_version}; upgrade SecureConnect"
            )
        if db_version > code_version:
            logger.warning(
                "database schema version %d is newer than the code's %d but declares itself compatible",
                db_version,
                code_version,
            )
            return db_version
    for version in range(db_version, code_version + 1):
        txn.execute("SELECT file FROM applied_deltas WHERE version = ?", (version,))
        applied = {row[0] for row in txn.fetchall()}
        for delta in schema.deltas(version, engine.name):
            if delta.name not in applied:
                _apply_delta_txn(txn, engine, delta)
    txn.execute("UPDATE schema_version SET version = ?", (code_version,))
    txn.execute("UPDATE schema_compat_version SET compat_version = ?", (max(compat, schema.compat_version),))
    return code_version


async def prepare_database(
    pool: DatabasePool, schema: SchemaFiles | None = None, *, snapshot_version: int | None = None
) -> int:
    """Create or upgrade the database behind ``pool`` in one write transaction.

    Args:
        pool: The database pool (its engine picks engine-specific files).
        schema: The schema files; the packaged ones by default.
        snapshot_version: See :func:`prepare_database_txn`.

    Returns:
        The database's schema version afterwards.

    Raises:
        IncompatibleSchemaError: the database's compat version is newer than the code; refuse to start.
        SchemaError: bad schema files, a non-empty foreign database, or broken bookkeeping.
    """
    return await pool.run_txn("prepare_database", prepare_database_txn, pool.engine, schema, snapshot_version)
