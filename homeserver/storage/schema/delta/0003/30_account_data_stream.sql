-- Account data stream ids and the indexes the account endpoints read by (issue 3).

-- The last stream id handed out for account data (exactly one row). Writers bump it with
-- UPDATE ... SET stream_id = stream_id + 1 in the transaction that writes the data, so the row lock
-- serialises writers on PostgreSQL and ids become visible in the order they were allocated.
CREATE TABLE account_data_stream_id (
    singleton CHAR(1) NOT NULL DEFAULT 'X' UNIQUE CHECK (singleton = 'X'),
    stream_id BIGINT NOT NULL
);
INSERT INTO account_data_stream_id (singleton, stream_id) VALUES ('X', 0);

-- /sync reads a user's account data changed after a stream position.
CREATE INDEX account_data_user_stream ON account_data (user_id, stream_id);
