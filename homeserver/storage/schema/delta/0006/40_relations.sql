-- Event relationships (m.relates_to) and thread roots (issue 5, relations and threads).
-- Both tables are written inside the persist transaction of the child event, so they never disagree
-- with the events table. Redacted children are excluded at read time (events.redacted_by).

-- One row per event that carries a cleartext m.relates_to with a rel_type. event_nid is the child's
-- stream ordering; depth and origin_server_ts are copied from it for ordering without a join.
-- replacement_ok: for m.replace, the child has m.new_content (or is encrypted, where it cannot be seen).
CREATE TABLE event_relations (
    event_nid BIGINT NOT NULL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    relates_to_id TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    room_nid BIGINT NOT NULL,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    aggregation_key TEXT,
    depth BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    replacement_ok BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX event_relations_parent ON event_relations (relates_to_id, rel_type, depth, event_nid);

-- Every thread root of a room with its latest (topologically) unredacted reply; /threads pages by it.
CREATE TABLE thread_roots (
    root_event_id TEXT NOT NULL,
    room_nid BIGINT NOT NULL,
    latest_event_id TEXT NOT NULL,
    latest_depth BIGINT NOT NULL,
    latest_event_nid BIGINT NOT NULL,
    PRIMARY KEY (root_event_id, room_nid)
);
CREATE INDEX thread_roots_room_latest ON thread_roots (room_nid, latest_depth, latest_event_nid);
