-- A new table with a boolean and a unique index; a string literal containing ';' and '?'.
CREATE TABLE users_fixture (
    user_id TEXT NOT NULL,
    admin BOOLEAN NOT NULL DEFAULT FALSE,
    note TEXT NOT NULL DEFAULT 'a; b? 100%'
);
CREATE UNIQUE INDEX users_fixture_user_id ON users_fixture (user_id);
