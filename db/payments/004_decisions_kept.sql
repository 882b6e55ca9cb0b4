-- The inbox is the record of every decided payment: one row per order id
-- (the idempotency key), with its outcome, reason, user and amount. It is
-- kept for ever (docs/architecture.md, "The guarantees"): a request replayed at any age gets the
-- recorded answer again and can never be debited after a refusal. Nothing
-- purges it any more, so the index that served the purge goes.
DROP INDEX inbox_processed;
COMMENT ON TABLE inbox IS
    'Every payment request''s decided outcome, one row per order id, kept for ever';
