"""Schema migrations on every engine: fresh == upgraded, idempotence, compat refusal, bad files."""

from __future__ import annotations

import pathlib
import shutil
from typing import Any

import pytest

from homeserver.storage.engines.base import SchemaDescription
from homeserver.storage.migrations import (
    SCHEMA_COMPAT_VERSION,
    IncompatibleSchemaError,
    SchemaError,
    SchemaFiles,
    prepare_database,
    split_sql,
)
from homeserver.storage.pool import DatabasePool, Txn
from tests.storage.harness import TestDatabase, get_failure, get_success

FIXTURE = pathlib.Path(__file__).parent / "schema_fixture"


def _describe(pool: DatabasePool) -> SchemaDescription:
    return get_success(pool.run_read("describe", lambda txn: pool.engine.describe_schema(txn)))


def _query(pool: DatabasePool, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    def txn_fn(txn: Txn) -> list[tuple[Any, ...]]:
        txn.execute(sql, args)
        return txn.fetchall()

    return get_success(pool.run_txn("query", txn_fn))


def _reset(pool: DatabasePool) -> None:
    """Drop every table so the same database can be built again another way."""

    def drop_txn(txn: Txn) -> None:
        for table in txn.engine.list_tables(txn):
            txn.execute(f"DROP TABLE IF EXISTS {table}")  # FTS5 shadow tables go with their table
        if txn.engine.name == "postgres":  # sequences (id allocation) are schema objects too
            txn.execute("SELECT sequence_name FROM information_schema.sequences WHERE sequence_schema = 'public'")
            for (sequence,) in txn.fetchall():
                txn.execute(f'DROP SEQUENCE "{sequence}"')

    get_success(pool.run_txn("drop_all", drop_txn))


def _versions(pool: DatabasePool) -> tuple[int, int]:
    (version,) = _query(pool, "SELECT version FROM schema_version")[0]
    (compat,) = _query(pool, "SELECT compat_version FROM schema_compat_version")[0]
    return version, compat


class PackagedSchemaTests:
    def test_packaged_schema_found_via_importlib_resources(self) -> None:
        schema = SchemaFiles.packaged()
        assert schema.code_version >= 1
        assert 1 in schema.full_versions()
        assert "CREATE TABLE stream_positions" in schema.full_snapshot(1, "sqlite")[0].read_text()

    def test_fresh_database(self, database: TestDatabase) -> None:
        """A fresh database gets the bookkeeping tables, stream_positions and the current versions."""
        pool = database.make_pool()
        assert get_success(prepare_database(pool)) == SchemaFiles.packaged().code_version
        tables = set(_describe(pool).tables)
        assert {"schema_version", "schema_compat_version", "applied_deltas", "stream_positions"} <= tables
        assert _versions(pool) == (SchemaFiles.packaged().code_version, SCHEMA_COMPAT_VERSION)
        get_success(
            pool.simple_upsert(
                "pos", "stream_positions", {"stream_name": "events", "instance_name": "main"}, {"position": 5}
            )
        )
        get_success(
            pool.simple_upsert(
                "pos", "stream_positions", {"stream_name": "events", "instance_name": "main"}, {"position": 9}
            )
        )
        assert _query(pool, "SELECT position FROM stream_positions") == [(9,)]

    def test_every_snapshot_plus_deltas_equals_newest(self, database: TestDatabase) -> None:
        """The CI check: each shipped full snapshot + later deltas gives the newest snapshot's schema."""
        pool = database.make_pool()
        schema = SchemaFiles.packaged()
        get_success(prepare_database(pool, schema))
        newest = _describe(pool)
        applied = _query(pool, "SELECT version, file FROM applied_deltas ORDER BY version, file")
        for version in schema.full_versions():
            _reset(pool)
            get_success(prepare_database(pool, schema, snapshot_version=version))
            assert _describe(pool) == newest, (
                f"full/{version:04d}.sql + deltas differs from the newest schema"
            )
            assert _query(pool, "SELECT version, file FROM applied_deltas ORDER BY version, file") == applied

    def test_prepared_fixture_has_schema(self, prepared_database: TestDatabase) -> None:
        """The prepared_database fixture (for store tests) holds the current schema."""
        pool = prepared_database.make_pool()
        assert _versions(pool)[0] == SchemaFiles.packaged().code_version


class FixtureSchemaTests:
    schema = SchemaFiles(FIXTURE, compat_version=2)

    def test_code_version_is_highest_file(self) -> None:
        assert self.schema.code_version == 3
        assert self.schema.full_versions() == [1, 3]
        assert SchemaFiles(FIXTURE, max_version=2).code_version == 2

    def test_engine_variants_selected(self) -> None:
        assert [d.name for d in self.schema.deltas(3, "sqlite")] == [
            "01_display_name.sql",
            "02_counters.sqlite.sql",
            "03_index_in_python.py",
        ]
        assert [d.name for d in self.schema.deltas(3, "postgres")] == [
            "01_display_name.sql",
            "02_counters.postgres.sql",
            "03_index_in_python.py",
        ]

    def test_fresh_equals_upgraded(self, database: TestDatabase) -> None:
        """Newest snapshot == baseline + all deltas == v2 database upgraded later (tables, columns, indexes)."""
        pool = database.make_pool()
        get_success(prepare_database(pool, self.schema))
        fresh = _describe(pool)
        fresh_applied = _query(pool, "SELECT version, file FROM applied_deltas ORDER BY version, file")
        assert _versions(pool) == (3, 2)
        assert {"users_fixture", "counters_fixture", "rooms_fixture"} <= set(fresh.tables)

        _reset(pool)
        get_success(prepare_database(pool, self.schema, snapshot_version=1))
        assert _describe(pool) == fresh
        assert (
            _query(pool, "SELECT version, file FROM applied_deltas ORDER BY version, file") == fresh_applied
        )

        _reset(pool)
        assert get_success(prepare_database(pool, SchemaFiles(FIXTURE, max_version=2))) == 2
        assert "display_name" not in {c.name for c in _describe(pool).tables["users_fixture"]}
        assert get_success(prepare_database(pool, self.schema)) == 3
        assert _describe(pool) == fresh
        assert _versions(pool) == (3, 2)

    def test_rerun_is_idempotent(self, database: TestDatabase) -> None:
        pool = database.make_pool()
        get_success(prepare_database(pool, self.schema))
        before = (_describe(pool), _query(pool, "SELECT version, file FROM applied_deltas ORDER BY file"))
        get_success(prepare_database(pool, self.schema))
        get_success(prepare_database(pool, self.schema))
        assert (
            _describe(pool),
            _query(pool, "SELECT version, file FROM applied_deltas ORDER BY file"),
        ) == before

    def test_portable_sql_details(self, database: TestDatabase) -> None:
        """Defaults with ';', '?' and '%' survive the splitter and param conversion; booleans default False."""
        pool = database.make_pool()
        get_success(prepare_database(pool, self.schema, snapshot_version=1))
        get_success(pool.simple_insert("u", "users_fixture", {"user_id": "@a:x"}))
        assert _query(pool, "SELECT admin, note FROM users_fixture") == [(False, "a; b? 100%")]
        engine_file = f"02_counters.{database.engine_name}.sql"
        assert _query(pool, "SELECT version FROM applied_deltas WHERE file = ?", (engine_file,)) == [(3,)]

    def test_new_delta_in_current_version_is_applied(self, database: TestDatabase) -> None:
        """A delta file not yet in applied_deltas for the DB's own version runs on the next start."""
        pool = database.make_pool()
        get_success(prepare_database(pool, self.schema))
        _query(pool, "DELETE FROM applied_deltas WHERE file = '03_index_in_python.py'")
        _query(pool, "DROP INDEX users_fixture_display_name")
        get_success(prepare_database(pool, self.schema))
        assert any(i.name == "users_fixture_display_name" for i in _describe(pool).indexes)

    def test_refuses_newer_compat_version(self, database: TestDatabase) -> None:
        pool = database.make_pool()
        get_success(prepare_database(pool, self.schema))
        _query(pool, "UPDATE schema_version SET version = 5")
        _query(pool, "UPDATE schema_compat_version SET compat_version = 4")
        err = get_failure(prepare_database(pool, self.schema), IncompatibleSchemaError)
        assert ">= 4" in str(err) and "schema version 3" in str(err)
        assert _versions(pool) == (5, 4)

    def test_newer_but_compatible_database_is_used_as_is(self, database: TestDatabase) -> None:
        """Rollback safety: code v3 runs on a v5 database whose compat version is 3."""
        pool = database.make_pool()
        get_success(prepare_database(pool, self.schema))
        _query(pool, "UPDATE schema_version SET version = 5")
        _query(pool, "UPDATE schema_compat_version SET compat_version = 3")
        assert get_success(prepare_database(pool, self.schema)) == 5
        assert _versions(pool) == (5, 3)

    def test_refuses_foreign_database(self, database: TestDatabase) -> None:
        pool = database.make_pool()
        _query(pool, "CREATE TABLE something_else (x INTEGER)")
        err = get_failure(prepare_database(pool, self.schema), SchemaError)
        assert "something_else" in str(err)

    def test_broken_bookkeeping(self, database: TestDatabase) -> None:
        pool = database.make_pool()
        get_success(prepare_database(pool, self.schema))
        _query(pool, "DELETE FROM schema_version")
        get_failure(prepare_database(pool, self.schema), SchemaError)

    def test_unknown_snapshot_version(self, database: TestDatabase) -> None:
        pool = database.make_pool()
        get_failure(prepare_database(pool, self.schema, snapshot_version=2), SchemaError)


def _copy_fixture(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "schema"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


class BadSchemaFilesTests:
    def test_failed_delta_rolls_back_everything(self, database: TestDatabase, tmp_path: pathlib.Path) -> None:
        """A delta that fails leaves the database exactly as it was (one transaction)."""
        root = _copy_fixture(tmp_path)
        (root / "delta" / "0003" / "04_broken.sql").write_text(
            "CREATE TABLE ok_table (x INTEGER);\nNOT SQL;\n"
        )
        pool = database.make_pool()
        get_success(prepare_database(pool, SchemaFiles(root, max_version=2)))
        before = _describe(pool)
        with pytest.raises(Exception, match=r"(?i)syntax"):
            get_success(prepare_database(pool, SchemaFiles(root)))
        assert _describe(pool) == before
        assert _versions(pool)[0] == 2

    @pytest.mark.parametrize(
        ("relpath", "content"),
        [
            ("delta/0003/4_bad-name.sql", "SELECT 1"),
            ("delta/0003/05_typo.sqlite", "SELECT 1"),
            ("delta/0003/06_x.mysql.sql", "SELECT 1"),
            ("delta/3", None),
            ("full/0003.txt", "x"),
        ],
    )
    def test_unexpected_files_rejected(
        self, tmp_path: pathlib.Path, relpath: str, content: str | None
    ) -> None:
        root = _copy_fixture(tmp_path)
        target = root / relpath
        if content is None:
            target.mkdir()
        else:
            target.write_text(content)
        with pytest.raises(SchemaError):
            schema = SchemaFiles(root)
            _ = schema.code_version
            schema.deltas(3, "sqlite")

    def test_ignored_files(self, tmp_path: pathlib.Path) -> None:
        root = _copy_fixture(tmp_path)
        (root / "delta" / "0003" / "README.md").write_text("notes")
        (root / "delta" / "0003" / "__pycache__").mkdir()
        (root / "delta" / ".gitkeep").write_text("")
        assert len(SchemaFiles(root).deltas(3, "sqlite")) == 3

    def test_python_delta_without_run(self, database: TestDatabase, tmp_path: pathlib.Path) -> None:
        root = _copy_fixture(tmp_path)
        (root / "delta" / "0004").mkdir()
        (root / "delta" / "0004" / "01_no_run.py").write_text("X = 1\n")
        pool = database.make_pool()
        err = get_failure(prepare_database(pool, SchemaFiles(root)), SchemaError)
        assert "run(txn, engine)" in str(err)

    def test_empty_schema_dir(self, tmp_path: pathlib.Path) -> None:
        with pytest.raises(SchemaError):
            _ = SchemaFiles(tmp_path).code_version

    def test_missing_portable_snapshot(self, tmp_path: pathlib.Path) -> None:
        with pytest.raises(SchemaError):
            SchemaFiles(tmp_path).full_snapshot(1, "sqlite")


class SplitSqlTests:
    def test_splits_and_strips_comments(self) -> None:
        text = (
            "-- header; with semicolon\nCREATE TABLE a (x TEXT DEFAULT 'a;''b');\n/* c; */ SELECT 1;;\n  \n"
        )
        assert split_sql(text) == ["CREATE TABLE a (x TEXT DEFAULT 'a;''b')", "SELECT 1"]

    def test_quoted_identifier_and_no_trailing_semicolon(self) -> None:
        assert split_sql('SELECT "a;b" FROM t') == ['SELECT "a;b" FROM t']

    def test_unterminated_constructs(self) -> None:
        assert split_sql("SELECT 'abc") == ["SELECT 'abc"]
        assert split_sql("SELECT 1 /* open") == ["SELECT 1"]
        assert split_sql("") == []
