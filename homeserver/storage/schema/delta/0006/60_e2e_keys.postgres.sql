-- Stream id sequences of the e2e streams on PostgreSQL (SQLite allocates in-process).
CREATE SEQUENCE device_lists_stream_seq;
CREATE SEQUENCE to_device_stream_seq;
