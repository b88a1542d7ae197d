-- Dehydrated devices (MSC3814): at most one per user. The device itself is an ordinary row of
-- "devices" (so to-device messages, keys and device lists treat it like any other device); this
-- table marks which device it is and keeps the client's opaque, encrypted device_data (JSON).
CREATE TABLE dehydrated_devices (
    user_id TEXT NOT NULL PRIMARY KEY,
    device_id TEXT NOT NULL,
    device_data TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
