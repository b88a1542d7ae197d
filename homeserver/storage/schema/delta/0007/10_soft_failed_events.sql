-- Soft-failed received events (issue 10, docs/adr/0006-room-input.md): authorised against the state
-- before them but not the room's current state. They are stored with outlier = TRUE (outside the
-- timeline: every reader filters outliers) but keep their state groups; this flag tells them apart.
ALTER TABLE events ADD COLUMN soft_failed BOOLEAN NOT NULL DEFAULT FALSE;
