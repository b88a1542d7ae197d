"""A Python delta: creates an index (and shows the engine is available)."""


def run(txn, engine):
    txn.execute("CREATE INDEX users_fixture_display_name ON users_fixture (display_name)")
    if engine.name not in ("sqlite", "postgres"):
        raise AssertionError(engine.name)
