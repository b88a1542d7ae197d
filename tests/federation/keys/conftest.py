"""Store fixtures for the federation tests: the storage suite's both-engines databases."""

from tests.storage.conftest import (  # noqa: F401  (fixtures are found by name)
    _pg_empty_db,
    _pg_prepared_db,
    postgres_server,
    prepared_database,
)
