-- Rooms, events, the event graph, state groups and current state (issue 4; DESIGN.md 2.6).
-- docs/adr/0003-event-storage.md explains where this departs from DESIGN.md.

CREATE TABLE rooms (
    room_nid BIGINT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL UNIQUE,
    room_version TEXT NOT NULL,
    creator TEXT,
    is_public BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts BIGINT NOT NULL
);

-- One row per persisted event. stream_ordering is the event's position in the "events" stream and
-- its internal id (event_nid).
CREATE TABLE events (
    stream_ordering BIGINT NOT NULL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_nid BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    depth BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    received_ts BIGINT NOT NULL,
    outlier BOOLEAN NOT NULL DEFAULT FALSE,
    rejected_reason TEXT,
    state_group_before BIGINT,
    state_group_after BIGINT,
    membership TEXT,
    redacted_by TEXT,
    txn_id TEXT,
    device_id TEXT,
    json TEXT NOT NULL
);
CREATE INDEX events_room_stream ON events (room_nid, stream_ordering);
CREATE INDEX events_room_topological ON events (room_nid, depth, stream_ordering);
CREATE INDEX events_room_ts ON events (room_nid, origin_server_ts);
CREATE INDEX events_membership ON events (state_key, stream_ordering) WHERE type = 'm.room.member';

CREATE TABLE event_edges (
    event_nid BIGINT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_nid, prev_event_id)
);

CREATE TABLE event_auth_edges (
    event_nid BIGINT NOT NULL,
    auth_event_id TEXT NOT NULL,
    PRIMARY KEY (event_nid, auth_event_id)
);

CREATE TABLE forward_extremities (
    room_nid BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_nid, event_id)
);

-- State groups: a full snapshot (prev_group NULL) or a delta on prev_group (event_id NULL = removed).
CREATE TABLE state_groups (
    group_id BIGINT NOT NULL PRIMARY KEY,
    room_nid BIGINT NOT NULL,
    prev_group BIGINT,
    delta_depth INTEGER NOT NULL,
    full_hash TEXT
);
CREATE INDEX state_groups_full_hash ON state_groups (room_nid, full_hash);

CREATE TABLE state_group_rows (
    group_id BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT,
    PRIMARY KEY (group_id, type, state_key)
);

-- The materialised current state of each room, and its changes as a stream.
CREATE TABLE current_state (
    room_nid BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    membership TEXT,
    PRIMARY KEY (room_nid, type, state_key)
);
CREATE INDEX current_state_members ON current_state (state_key, membership) WHERE type = 'm.room.member';

CREATE TABLE current_state_deltas (
    stream_id BIGINT NOT NULL,
    room_nid BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT,
    prev_event_id TEXT
);
CREATE INDEX current_state_deltas_stream ON current_state_deltas (stream_id);

-- Which event a client transaction ID produced (a retried send returns the same event).
CREATE TABLE event_txn_ids (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, room_id, txn_id)
);

CREATE TABLE redactions (
    redacts TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (redacts, event_id)
);

CREATE TABLE room_aliases (
    room_alias TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- Rooms a user has forgotten (they stop appearing even in include_leave syncs).
CREATE TABLE forgotten_rooms (
    user_id TEXT NOT NULL,
    room_nid BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_nid)
);
