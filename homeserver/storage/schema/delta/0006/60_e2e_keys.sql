-- End-to-end encryption key distribution and to-device messaging (issue 6). The server stores public
-- keys and opaque ciphertext only; it never decrypts.

-- Device identity keys as uploaded (canonical JSON without "unsigned"), one row per device.
CREATE TABLE e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    updated_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Unclaimed one-time keys. A claim deletes the row it hands out (DELETE ... RETURNING in one
-- transaction), so a key is given out at most once. upload_seq orders uploads (oldest first).
CREATE TABLE e2e_one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    upload_seq BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);
CREATE INDEX e2e_one_time_keys_order ON e2e_one_time_keys (user_id, device_id, algorithm, upload_seq);

-- At most one fallback key per device and algorithm; "used" once it was handed out by a claim.
CREATE TABLE e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- The device_lists stream: one row per change of a user's devices or keys. The stream id is
-- allocated in the transaction that makes the change.
CREATE TABLE device_lists_stream (
    stream_id BIGINT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT
);
CREATE INDEX device_lists_stream_user ON device_lists_stream (user_id, stream_id);

-- Per-device to-device inbox. One request takes one stream id; a device gets at most one message
-- per request. Rows are deleted when the device acknowledges them (a later since token).
CREATE TABLE to_device_inbox (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    message_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, stream_id)
);

-- Client transaction IDs of /sendToDevice (a retried request is not delivered twice).
CREATE TABLE to_device_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

-- The highest to-device stream id handed out (SQLite only: it seeds the in-process allocator after
-- a restart, since inbox rows are deleted; PostgreSQL uses the to_device_stream_seq sequence).
CREATE TABLE to_device_stream_hwm (
    singleton CHAR(1) NOT NULL DEFAULT 'X' UNIQUE CHECK (singleton = 'X'),
    stream_id BIGINT NOT NULL
);
INSERT INTO to_device_stream_hwm (singleton, stream_id) VALUES ('X', 0);
