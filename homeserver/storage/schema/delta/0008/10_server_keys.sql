-- Remote servers' signing keys (issue 13, docs/adr/0013-server-keys.md), owned by federation/key_store.py.

-- One row per (server, key): the public key and how long it may be used. valid_until_ts is the
-- latest validity any verified response gave it as a current key (already capped at 7 days after
-- receipt); expired_ts is set when a response listed it in old_verify_keys. A key is valid at ts when
-- ts <= valid_until_ts or ts < expired_ts.
CREATE TABLE server_signing_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    valid_until_ts BIGINT,
    expired_ts BIGINT,
    fetched_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

-- The latest verified /_matrix/key/v2/server response of each server, as received (signatures
-- included), so the notary endpoints can serve it again and old events stay checkable when the
-- server is down. valid_until_ts is the value the server wrote.
CREATE TABLE server_keys_json (
    server_name TEXT NOT NULL PRIMARY KEY,
    key_json TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL
);
