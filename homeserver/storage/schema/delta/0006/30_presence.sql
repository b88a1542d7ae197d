-- Presence (issue 5): the last broadcast presence of each local user, kept for restarts.
-- Written on change (batched by the presence sweep), never on every sync; read once at start.
CREATE TABLE presence_state (
    user_id TEXT NOT NULL PRIMARY KEY,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts BIGINT NOT NULL,
    stream_id BIGINT NOT NULL
);
