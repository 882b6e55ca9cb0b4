-- Sign-in attempts per user id and client address, counted before the
-- password is checked, in one statement (parallel guesses cannot pass the
-- limit between a count and a write). Past SIGNIN_MAX_FAILURES within
-- SIGNIN_WINDOW_S, the next attempt from that address waits 1 s, then 2, 4,
-- ... (at most the window): guesses slow down, and the owner signing in
-- from another address is never locked out. A success clears its own
-- address's count. Replaces sign_in_failures (per user id: anyone could
-- lock anyone out).
CREATE TABLE sign_in_attempts (
    user_id  text NOT NULL,
    client   text NOT NULL,
    failures int NOT NULL,
    last_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, client)
);
CREATE INDEX sign_in_attempts_last ON sign_in_attempts (last_at);
DROP TABLE sign_in_failures;
