-- Orders. (The outbox that announces them, dead letters and Idempotency-Keys
-- were made here too until they moved to db/lib, which lib's modules own.)
CREATE TABLE orders (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq             bigserial NOT NULL UNIQUE, -- creation order: the listing's cursor
    user_id         text NOT NULL CHECK (user_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    amount          bigint NOT NULL CHECK (amount BETWEEN 1 AND 1000000000000),
    description     text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    status          text NOT NULL DEFAULT 'NEW' CHECK (status IN ('NEW', 'FINISHED', 'CANCELLED')),
    reason          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- Re-drive: when a still-NEW order's payment request is published again.
    redrive_count   int NOT NULL DEFAULT 0,
    next_redrive_at timestamptz NOT NULL,
    CHECK ((status = 'CANCELLED') = (reason IS NOT NULL))
);
CREATE INDEX orders_by_user ON orders (user_id, seq DESC);
CREATE INDEX orders_redrive ON orders (next_redrive_at) WHERE status = 'NEW';
