-- The payment flow: the inbox (one row per order: the idempotency key of
-- payment.requested, with the outcome decided for it). (The outbox of
-- results to publish and the dead letters were made here too until they
-- moved to db/lib, which lib's modules own.)
CREATE TABLE inbox (
    order_id     uuid PRIMARY KEY,
    user_id      text NOT NULL,
    amount       bigint NOT NULL,
    outcome      text CHECK (outcome IN ('completed', 'failed')),
    reason       text,
    processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbox_processed ON inbox (processed_at);
