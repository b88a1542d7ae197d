-- Server-side search of room events (issue 5), SQLite: an FTS5 index beside a plain metadata table.
-- The PostgreSQL variant (50_search.postgres.sql) keeps the same metadata columns and a tsvector
-- instead; homeserver/storage/stores/search.py holds the only engine-specific queries.

-- One row per indexed event: which room it is in and which key (content.body, content.name,
-- content.topic) was indexed. stream_ordering is also the rowid of the event's FTS5 row.
CREATE TABLE event_search (
    stream_ordering BIGINT NOT NULL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_nid BIGINT NOT NULL,
    search_key TEXT NOT NULL
);
CREATE INDEX event_search_room ON event_search (room_nid, stream_ordering);

-- The indexed text. Porter stemming over unicode61 (diacritics folded) ranks like the PostgreSQL
-- 'english' configuration: both stem English and lower-case every script.
CREATE VIRTUAL TABLE event_search_fts USING fts5(
    value,
    tokenize = 'porter unicode61 remove_diacritics 2'
);
