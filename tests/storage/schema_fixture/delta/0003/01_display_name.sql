ALTER TABLE users_fixture ADD COLUMN display_name TEXT;
