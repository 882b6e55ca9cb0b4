-- Accounts and their ledger. The balance is a cache of the ledger's sum,
-- updated in the same transaction as every ledger row; the CHECK makes a
-- negative balance impossible whatever the code does.
CREATE TABLE accounts (
    user_id    text PRIMARY KEY CHECK (user_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    balance    bigint NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger (
    id         bigserial PRIMARY KEY,
    user_id    text NOT NULL REFERENCES accounts (user_id),
    kind       text NOT NULL CHECK (kind IN ('deposit', 'debit')),
    amount     bigint NOT NULL CHECK (amount > 0),
    order_id   text UNIQUE, -- set for debits: one debit per order
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'debit') = (order_id IS NOT NULL))
);
CREATE INDEX ledger_user ON ledger (user_id);
