-- Refunds, and the ledger as double entry (README, "Cancel and refund" and
-- "The books").
--
-- 1. Every ledger row is a transfer of `amount` from one account to
--    another: a customer's (named by their user id), the shop's revenue
--    ('@revenue') or the world outside ('@world', where deposits come
--    from). No user id can begin with '@'. Each kind has its one direction,
--    and the CHECK below makes any other impossible; so every row takes
--    from one account exactly what it gives another, and the sum over all
--    accounts is zero after every commit whatever the code does. The
--    customer's balance in `accounts` is what their transfers add up to
--    (make reconcile checks it); the shop's accounts have no cached
--    balance, which would make one row every payment in the shop waits for.
ALTER TABLE ledger ADD COLUMN from_account text, ADD COLUMN to_account text;
UPDATE ledger SET from_account = CASE kind WHEN 'deposit' THEN '@world'
                                           WHEN 'debit' THEN user_id ELSE '@revenue' END,
                  to_account = CASE kind WHEN 'debit' THEN '@revenue' ELSE user_id END;
ALTER TABLE ledger ALTER COLUMN from_account SET NOT NULL,
                   ALTER COLUMN to_account SET NOT NULL;

-- 2. A refund is a transfer of its own, named by its id, at most one each.
ALTER TABLE ledger ADD COLUMN refund_id uuid UNIQUE;
ALTER TABLE ledger DROP CONSTRAINT ledger_kind_check;
ALTER TABLE ledger DROP CONSTRAINT ledger_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_kind_check CHECK (
       (kind = 'deposit' AND from_account = '@world' AND to_account = user_id
        AND order_id IS NULL AND refund_id IS NULL)
    OR (kind = 'debit' AND from_account = user_id AND to_account = '@revenue'
        AND order_id IS NOT NULL AND refund_id IS NULL)
    OR (kind = 'cancellation' AND from_account = '@revenue' AND to_account = user_id
        AND order_id IS NOT NULL AND refund_id IS NULL)
    OR (kind = 'refund' AND from_account = '@revenue' AND to_account = user_id
        AND order_id IS NOT NULL AND refund_id IS NOT NULL));
-- One debit and one cancellation an order, as many refunds as it has.
ALTER TABLE ledger DROP CONSTRAINT ledger_order_kind_key;
CREATE UNIQUE INDEX ledger_order_once ON ledger (order_id, kind)
    WHERE kind IN ('debit', 'cancellation');
CREATE INDEX ledger_order ON ledger (order_id) WHERE order_id IS NOT NULL;

-- 3. The refund inbox: one row per refund id (the idempotency key of
--    refund.requested), with the outcome decided for it, kept for ever
--    like the payments' inbox.
CREATE TABLE refund_inbox (
    refund_id    uuid PRIMARY KEY,
    order_id     uuid NOT NULL,
    user_id      text NOT NULL,
    amount       bigint NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('completed', 'failed')),
    reason       text,
    processed_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((outcome = 'failed') = (reason IS NOT NULL))
);
CREATE INDEX refund_inbox_by_order ON refund_inbox (order_id);

-- One row per refund, in the batch's order, with its recorded outcome
-- (replayed: decided before, or earlier in this batch). A refund is
-- credited only if its order was paid, by this user, and what its order's
-- refunds then add up to is no more than was taken (reasons "not_paid",
-- "exceeds_payment"); the order's inbox row, locked, keeps two refunds of
-- one order, or a refund and a cancel, one after the other.
CREATE FUNCTION payment_refund_batch(p_refund uuid[], p_order uuid[], p_user text[],
                                     p_amount bigint[])
RETURNS TABLE (refund_id uuid, replayed boolean, outcome text, reason text, order_id uuid,
               user_id text, amount bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    i int;
    v_paid inbox%ROWTYPE;
    v_back bigint;
    v_why text;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_refund, 1), 0) LOOP
        SELECT * INTO v_paid FROM inbox ib WHERE ib.order_id = p_order[i] FOR UPDATE;
        -- The claim: the refund's row, decided below ('failed' only for the
        -- moment; a CHECK keeps a reason beside it).
        INSERT INTO refund_inbox AS r (refund_id, order_id, user_id, amount, outcome, reason)
        VALUES (p_refund[i], p_order[i], p_user[i], p_amount[i], 'failed', 'deciding')
        ON CONFLICT (refund_id) DO NOTHING;
        replayed := NOT FOUND;
        IF NOT replayed THEN
            SELECT coalesce(sum(r.amount), 0) INTO v_back FROM refund_inbox r
             WHERE r.order_id = p_order[i] AND r.outcome = 'completed';
            v_why := CASE
                WHEN v_paid.outcome IS DISTINCT FROM 'completed'
                  OR v_paid.user_id <> p_user[i] THEN 'not_paid'
                WHEN v_back + p_amount[i] > v_paid.amount THEN 'exceeds_payment'
            END;
            IF v_why IS NULL THEN
                UPDATE accounts a SET balance = a.balance + p_amount[i], updated_at = now()
                 WHERE a.user_id = p_user[i];
                INSERT INTO ledger (user_id, kind, amount, order_id, refund_id, from_account,
                                    to_account)
                VALUES (p_user[i], 'refund', p_amount[i], p_order[i]::text, p_refund[i],
                        '@revenue', p_user[i]);
            END IF;
            UPDATE refund_inbox r
               SET outcome = CASE WHEN v_why IS NULL THEN 'completed' ELSE 'failed' END,
                   reason = v_why
             WHERE r.refund_id = p_refund[i];
        END IF;
        SELECT r.refund_id, r.outcome, r.reason, r.order_id, r.user_id, r.amount
          INTO refund_id, outcome, reason, order_id, user_id, amount
          FROM refund_inbox r WHERE r.refund_id = p_refund[i];
        RETURN NEXT;
    END LOOP;
END
$$;

-- 4. A cancel gives back what the order still holds of its payment: the
--    amount less its refunds (orders sends a cancel only for a NEW order,
--    which has none; a cancel from anywhere else cannot give back twice).
CREATE OR REPLACE FUNCTION payment_cancel_batch(p_order uuid[], p_user text[], p_amount bigint[])
RETURNS TABLE (order_id uuid, outcome text, reason text, user_id text, amount bigint,
               credited boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    i int;
    v_paid inbox%ROWTYPE;
    v_back bigint;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_order, 1), 0) LOOP
        order_id := p_order[i];
        credited := false;
        -- The order's row, locked: a request for it decided by another
        -- consumer at this moment waits for this transaction, and sees
        -- 'cancelled' after.
        INSERT INTO inbox AS ib (order_id, user_id, amount, outcome, reason)
        VALUES (p_order[i], p_user[i], p_amount[i], 'cancelled', 'cancelled')
        ON CONFLICT (order_id) DO NOTHING;
        IF NOT FOUND THEN
            SELECT * INTO v_paid FROM inbox ib WHERE ib.order_id = p_order[i] FOR UPDATE;
            IF v_paid.outcome = 'completed' THEN
                SELECT coalesce(sum(r.amount), 0) INTO v_back FROM refund_inbox r
                 WHERE r.order_id = p_order[i] AND r.outcome = 'completed';
                IF v_paid.amount > v_back THEN
                    -- Paid: the money goes back to whom it was taken from.
                    UPDATE accounts a SET balance = a.balance + (v_paid.amount - v_back),
                                          updated_at = now()
                     WHERE a.user_id = v_paid.user_id;
                    INSERT INTO ledger (user_id, kind, amount, order_id, from_account, to_account)
                    VALUES (v_paid.user_id, 'cancellation', v_paid.amount - v_back,
                            p_order[i]::text, '@revenue', v_paid.user_id);
                    credited := true;
                END IF;
                UPDATE inbox ib SET outcome = 'cancelled', reason = 'cancelled'
                 WHERE ib.order_id = p_order[i];
            END IF;
        END IF;
        SELECT ib.outcome, ib.reason, ib.user_id, ib.amount
          INTO outcome, reason, user_id, amount
          FROM inbox ib WHERE ib.order_id = p_order[i];
        RETURN NEXT;
    END LOOP;
END
$$;

-- 5. The debit, written as its transfer (only the ledger row changes; the
--    rest is 008's).
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
            INSERT INTO ledger (user_id, kind, amount, order_id, from_account, to_account)
            SELECT d.u, 'debit', d.a, d.o::text, d.u, '@revenue' FROM decided d WHERE d.paid)
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

