-- Receipt stream ids on PostgreSQL (several writers may allocate at once; SQLite counts in-process).
CREATE SEQUENCE receipts_stream_seq;
