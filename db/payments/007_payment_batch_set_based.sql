-- The payment rule, set-based. The function of 005 walked the batch one
-- request at a time: five statements per message (claim, debit, ledger,
-- outcome, read back), each an executor start-up inside PostgreSQL. This
-- one runs three statements per batch whatever its size:
--
--   1. claim: insert every order id of the batch into the inbox (the first
--      occurrence of an id in the batch; ids already there stay as they
--      are). What was inserted is what this batch decides.
--   2. decide and apply, in one statement: lock the accounts concerned (in
--      user order), walk each user's new requests in the batch's order
--      (a recursive CTE, one step per request of that user, all users at
--      once), pay a request when what is left covers it, then subtract each
--      user's total, write a ledger debit per paid request, and record every
--      outcome in the claimed inbox rows.
--   3. answer: one row per request of the batch, in its order, with the
--      outcome recorded (new, or decided before: a replay).
--
-- The rule is the same as before, in the same place: paid when the account
-- holds enough at that point of the batch (a refused request leaves the
-- money for the next ones of the same user), never below 0 (and the CHECK
-- on accounts stays), insufficient_funds or account_not_found otherwise.
CREATE OR REPLACE FUNCTION payment_batch(p_order uuid[], p_user text[], p_amount bigint[])
RETURNS TABLE (order_id uuid, replayed boolean, outcome text, reason text, user_id text,
               amount bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_new uuid[];
BEGIN
    -- 1. The claim, in order id order (a fixed lock order against another
    --    consumer's batch holding some of the same ids after a rebalance).
    WITH firsts AS (
        SELECT DISTINCT ON (t.o) t.o, t.u, t.a
          FROM unnest(p_order, p_user, p_amount) WITH ORDINALITY AS t(o, u, a, n)
         ORDER BY t.o, t.n),
    claimed AS (
        INSERT INTO inbox AS ib (order_id, user_id, amount)
        SELECT f.o, f.u, f.a FROM firsts f ORDER BY f.o
        ON CONFLICT (order_id) DO NOTHING
        RETURNING ib.order_id)
    SELECT coalesce(array_agg(c.order_id), '{}') INTO v_new FROM claimed c;

    -- 2. Decide and apply.
    IF cardinality(v_new) > 0 THEN
        WITH RECURSIVE
        firsts AS (
            SELECT DISTINCT ON (t.o) t.o, t.u, t.a, t.n
              FROM unnest(p_order, p_user, p_amount) WITH ORDINALITY AS t(o, u, a, n)
             ORDER BY t.o, t.n),
        todo AS (
            SELECT f.o, f.u, f.a, row_number() OVER (PARTITION BY f.u ORDER BY f.n) AS k
              FROM firsts f WHERE f.o = ANY (v_new)),
        balances AS (
            SELECT a.user_id AS u, a.balance AS b
              FROM accounts a WHERE a.user_id IN (SELECT t.u FROM todo t)
             ORDER BY a.user_id FOR UPDATE),
        walk (u, k, left_after, o, paid) AS (
            SELECT b.u, 0::bigint, b.b, NULL::uuid, NULL::boolean FROM balances b
            UNION ALL
            SELECT w.u, w.k + 1,
                   CASE WHEN w.left_after >= t.a THEN w.left_after - t.a ELSE w.left_after END,
                   t.o, w.left_after >= t.a
              FROM walk w JOIN todo t ON t.u = w.u AND t.k = w.k + 1),
        decided AS (
            SELECT t.o, t.u, t.a, coalesce(w.paid, false) AS paid,
                   CASE WHEN w.paid THEN NULL
                        WHEN w.o IS NULL THEN 'account_not_found'
                        ELSE 'insufficient_funds' END AS why
              FROM todo t LEFT JOIN walk w ON w.o = t.o),
        debited AS (
            UPDATE accounts a SET balance = a.balance - s.total, updated_at = now()
              FROM (SELECT d.u, sum(d.a) AS total FROM decided d WHERE d.paid GROUP BY d.u) s
             WHERE a.user_id = s.u),
        ledgered AS (
            INSERT INTO ledger (user_id, kind, amount, order_id)
            SELECT d.u, 'debit', d.a, d.o::text FROM decided d WHERE d.paid)
        UPDATE inbox ib
           SET outcome = CASE WHEN d.paid THEN 'completed' ELSE 'failed' END, reason = d.why
          FROM decided d
         WHERE ib.order_id = d.o;
    END IF;

    -- 3. What is recorded for each request, in the batch's order; a
    --    request is new only as the first occurrence of an id just claimed.
    RETURN QUERY
    SELECT t.o, NOT (t.o = ANY (v_new) AND t.n = f.n), ib.outcome, ib.reason, ib.user_id,
           ib.amount
      FROM unnest(p_order) WITH ORDINALITY AS t(o, n)
      JOIN (SELECT x.o, min(x.n) AS n FROM unnest(p_order) WITH ORDINALITY AS x(o, n)
             GROUP BY x.o) f ON f.o = t.o
      JOIN inbox ib ON ib.order_id = t.o
     ORDER BY t.n;
END
$$;
