-- Idempotency-Keys (lib/idem.h): each key with the request's fingerprint
-- and the stored answer, written in the same transaction as the work it
-- guards; purged after IDEMPOTENCY_RETENTION_S.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key         text PRIMARY KEY,
    fingerprint bytea NOT NULL,
    status      int,
    body        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at);
