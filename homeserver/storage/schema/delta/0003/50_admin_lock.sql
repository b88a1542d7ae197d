-- The administrative account lock (spec client-server-api "Account locking"; admin API, issue 3).
--
-- Deliberately separate from users.locked_until_ts, which is the failed-login lockout: that one only
-- refuses new password logins. This flag makes every existing access token of the account answer
-- 401 M_USER_LOCKED. Were the two merged, anyone could lock a user out of their own sessions just by
-- failing logins in their name.
ALTER TABLE users ADD COLUMN locked BOOLEAN NOT NULL DEFAULT FALSE;
