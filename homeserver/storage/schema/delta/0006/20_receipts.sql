-- Read receipts (issue 5): the latest receipt per (room, type, user, thread), with the position in the
-- "receipts" stream at which it last moved (allocated in the same transaction as the write).
-- thread_id is '' for an unthreaded receipt, 'main' or a thread root's event ID otherwise.
-- event_stream is the stream ordering of the acknowledged event: receipts only move forward along it.
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_stream BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_room_stream ON receipts (room_id, stream_id);
CREATE INDEX receipts_user_room ON receipts (user_id, room_id);
CREATE INDEX receipts_stream ON receipts (stream_id);
