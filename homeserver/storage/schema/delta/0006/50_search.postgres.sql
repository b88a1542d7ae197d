-- Server-side search of room events (issue 5), PostgreSQL: a tsvector column with a GIN index.
-- The SQLite variant (50_search.sqlite.sql) keeps the same metadata columns and an FTS5 table
-- instead; homeserver/storage/stores/search.py holds the only engine-specific queries.

-- One row per indexed event: which room it is in, which key (content.body, content.name,
-- content.topic) was indexed, and the text as an 'english' tsvector.
CREATE TABLE event_search (
    stream_ordering BIGINT NOT NULL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_nid BIGINT NOT NULL,
    search_key TEXT NOT NULL,
    vector TSVECTOR NOT NULL
);
CREATE INDEX event_search_room ON event_search (room_nid, stream_ordering);
CREATE INDEX event_search_vector ON event_search USING GIN (vector);
