-- Id sequences on PostgreSQL (SQLite allocates in-process: it is single-process only).
CREATE SEQUENCE events_stream_seq;
CREATE SEQUENCE state_group_id_seq;
CREATE SEQUENCE room_nid_seq;
