-- EDU outbox ids on PostgreSQL (any process may queue an EDU; SQLite counts in-process).
CREATE SEQUENCE federation_edu_outbox_seq;
