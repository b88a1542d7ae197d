/* An index on an existing table. */
CREATE INDEX rooms_fixture_creator ON rooms_fixture (creator);
