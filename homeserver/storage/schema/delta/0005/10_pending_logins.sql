-- Password checks in flight, counted apart from failures: only real failures lock an account,
-- while failures + checks in flight together never exceed the lockout limit.
ALTER TABLE users ADD COLUMN pending_logins INTEGER NOT NULL DEFAULT 0;
