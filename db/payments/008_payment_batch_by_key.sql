-- The accounts of a batch, found by their key whatever the table's size.
-- 007 wrote "user_id IN (SELECT ... FROM todo)", and the planner, which
-- cannot see into the batch, hash-joined it with a sequential scan of every
-- account: 0.2-0.3 ms per batch at 1,841 accounts (auto_explain), growing
-- with every account ever opened. An array of the batch's users is one
-- primary-key probe each. Nothing else changes.
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
              FROM accounts a WHERE a.user_id = ANY (ARRAY(SELECT DISTINCT t.u FROM todo t))
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

