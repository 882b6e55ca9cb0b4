-- The outbox (lib/outbox.h): messages written in the same transaction as
-- the change they announce, published and deleted by the relay. Every
-- service with messages has one, in its own database.
--
-- The migrations in db/lib are applied to each such database before the
-- service's own, and are written to apply alike to a new database and to
-- one whose service migrations made these tables before they moved here
-- (IF NOT EXISTS, and the same names PostgreSQL gave them).
CREATE TABLE IF NOT EXISTS outbox (
    id         bigserial PRIMARY KEY,
    topic      text NOT NULL,
    key        text NOT NULL,
    payload    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
