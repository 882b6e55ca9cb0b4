-- Users and their passwords. A password is stored only as libsodium's
-- Argon2id string ($argon2id$v=19$m=...,t=...,p=1$salt$hash): the
-- parameters travel with each hash, so raising them later leaves older
-- hashes valid.
CREATE TABLE users (
    user_id       text PRIMARY KEY CHECK (user_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    password_hash text NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    role          text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'operator')),
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Failed sign-ins, known user id or not (so that both behave the same):
-- more than SIGNIN_MAX_FAILURES within SIGNIN_WINDOW_S and that user id is
-- refused with 429 until the window has passed. Purged once older.
CREATE TABLE sign_in_failures (
    user_id   text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sign_in_failures_user ON sign_in_failures (user_id, failed_at);
CREATE INDEX sign_in_failures_at ON sign_in_failures (failed_at);
