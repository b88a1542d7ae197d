-- The federation sender's durable state (issue 13, docs/adr/0017-federation-sending.md).
-- Owned by federation/sender/store.py.

-- How far each sender shard has fanned the events stream out (rows with stream_ordering <= this
-- have been recorded in federation_destination_rooms for every destination of the shard).
CREATE TABLE federation_sender_position (
    shard INTEGER NOT NULL PRIMARY KEY,
    stream_ordering BIGINT NOT NULL
);

-- Per destination: what it has acknowledged and when it may be tried again.
CREATE TABLE federation_destinations (
    destination TEXT NOT NULL PRIMARY KEY,
    last_successful_stream_ordering BIGINT NOT NULL DEFAULT 0,
    retry_last_ts BIGINT NOT NULL DEFAULT 0,
    retry_interval_ms BIGINT NOT NULL DEFAULT 0,
    failure_count INTEGER NOT NULL DEFAULT 0
);

-- Per destination and room: the newest of our events that the destination should have. Catch-up
-- sends these (one per room) instead of replaying the whole backlog.
CREATE TABLE federation_destination_rooms (
    destination TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (destination, room_id)
);
CREATE INDEX federation_destination_rooms_order ON federation_destination_rooms (destination, stream_ordering);

-- EDUs that must survive a restart (to-device messages, device-list and signing-key updates),
-- deleted once a transaction carrying them is acknowledged.
CREATE TABLE federation_edu_outbox (
    outbox_id BIGINT NOT NULL PRIMARY KEY,
    destination TEXT NOT NULL,
    edu_type TEXT NOT NULL,
    content TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX federation_edu_outbox_destination ON federation_edu_outbox (destination, outbox_id);
