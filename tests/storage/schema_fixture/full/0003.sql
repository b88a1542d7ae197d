-- Test fixture schema, version 3 (== version 1 + deltas 0002 and 0003).
-- The schema version the database is at (exactly one row).
CREATE TABLE schema_version (
    singleton CHAR(1) NOT NULL DEFAULT 'X' UNIQUE CHECK (singleton = 'X'),
    version INTEGER NOT NULL
);

-- The oldest code schema version that may use this database (exactly one row).
CREATE TABLE schema_compat_version (
    singleton CHAR(1) NOT NULL DEFAULT 'X' UNIQUE CHECK (singleton = 'X'),
    compat_version INTEGER NOT NULL
);

-- Delta files already applied (schema/delta/<version>/<file>).
CREATE TABLE applied_deltas (
    version INTEGER NOT NULL,
    file TEXT NOT NULL,
    UNIQUE (version, file)
);

-- How far each writer instance of each stream has persisted (DESIGN 2.7), so a restart resumes.
CREATE TABLE stream_positions (
    stream_name TEXT NOT NULL,
    instance_name TEXT NOT NULL,
    position BIGINT NOT NULL,
    UNIQUE (stream_name, instance_name)
);

CREATE TABLE rooms_fixture (
    room_id TEXT NOT NULL PRIMARY KEY,
    creator TEXT
);
CREATE INDEX rooms_fixture_creator ON rooms_fixture (creator);

CREATE TABLE users_fixture (
    user_id TEXT NOT NULL,
    display_name TEXT,
    admin BOOLEAN NOT NULL DEFAULT FALSE,
    note TEXT NOT NULL DEFAULT 'a; b? 100%'
);
CREATE UNIQUE INDEX users_fixture_user_id ON users_fixture (user_id);
CREATE INDEX users_fixture_display_name ON users_fixture (display_name);
