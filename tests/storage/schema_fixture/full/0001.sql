-- Test fixture schema, version 1.
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
