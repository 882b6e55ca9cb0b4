-- When an order's (or a refund's) request was last put into the outbox:
-- at its creation, then at each re-drive. Re-drive sends a request again
-- only when payments has read every request sent before it (and it is no
-- longer in the outbox): an outage of payments adds nothing to the outbox.
-- Rows made before this column take the migration's time: they wait for
-- payments to have read what was sent before it, as new ones do.
ALTER TABLE orders ADD COLUMN sent_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE refunds ADD COLUMN sent_at timestamptz NOT NULL DEFAULT now();
