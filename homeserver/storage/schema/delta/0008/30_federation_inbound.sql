-- Inbound federation transactions (issue 13, docs/adr/0014-federation-inbound.md): the answer we gave
-- to each (origin, txn_id), so a retried transaction gets the same answer without being processed
-- again. Owned by federation/transaction_store.py; rows older than the retention are pruned.
CREATE TABLE federation_inbound_transactions (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response_json TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_inbound_transactions_ts ON federation_inbound_transactions (received_ts);
