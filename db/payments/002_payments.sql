-- The payment flow: inbox (one row per order: the idempotency key of
-- payment.requested, with the outcome decided for it), outbox (results to
-- publish), dead letters (messages that cannot be handled).
CREATE TABLE inbox (
    order_id     uuid PRIMARY KEY,
    user_id      text NOT NULL,
    amount       bigint NOT NULL,
    outcome      text CHECK (outcome IN ('completed', 'failed')),
    reason       text,
    processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbox_processed ON inbox (processed_at);

CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    topic      text NOT NULL,
    key        text NOT NULL,
    payload    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dead_letters (
    id         bigserial PRIMARY KEY,
    topic      text NOT NULL,
    partition  int NOT NULL,
    "offset"   bigint NOT NULL,
    key        bytea,
    payload    bytea,
    reason     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
