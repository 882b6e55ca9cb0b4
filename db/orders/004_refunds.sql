-- Refunds (README, "Cancel and refund"). A FINISHED order's owner asks for
-- some or all of the money back; each refund is its own row, with its own
-- id (payments' inbox key for it), and travels as refund.requested behind
-- the order's payment on the user's partition. The order keeps two sums:
-- refund_reserved counts every refund not FAILED (what may still be asked
-- for is amount - refund_reserved, checked under the order's row lock), and
-- refunded_amount what has come back; all of it back, the order is REFUNDED.
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('NEW', 'FINISHED', 'CANCELLED', 'REFUNDED'));
ALTER TABLE orders ADD COLUMN refund_reserved bigint NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN refunded_amount bigint NOT NULL DEFAULT 0;
ALTER TABLE orders ADD CONSTRAINT orders_refunds_check
    CHECK (0 <= refunded_amount AND refunded_amount <= refund_reserved
           AND refund_reserved <= amount
           AND (refund_reserved = 0 OR status IN ('FINISHED', 'REFUNDED'))
           AND (status = 'REFUNDED') = (refunded_amount = amount));

CREATE TABLE refunds (
    id              uuid PRIMARY KEY,
    seq             bigserial NOT NULL UNIQUE,
    order_id        uuid NOT NULL REFERENCES orders (id),
    user_id         text NOT NULL,
    amount          bigint NOT NULL CHECK (amount > 0),
    status          text NOT NULL DEFAULT 'PENDING'
                    CHECK (status IN ('PENDING', 'COMPLETED', 'FAILED')),
    reason          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- Re-drive, as for orders: a PENDING refund's request is sent again.
    redrive_count   int NOT NULL DEFAULT 0,
    next_redrive_at timestamptz NOT NULL,
    CHECK ((status = 'FAILED') = (reason IS NOT NULL))
);
CREATE INDEX refunds_by_order ON refunds (order_id, seq);
CREATE INDEX refunds_redrive ON refunds (next_redrive_at) WHERE status = 'PENDING';

-- How many refunds an order has had (ORDER_REFUNDS_MAX at most): what its
-- read lists, and what bounds that list.
ALTER TABLE orders ADD COLUMN refund_count int NOT NULL DEFAULT 0;
