-- The payment rule in one place. payment_batch used to report what it
-- found (debited? account exists?) and the service decided in C, wrote the
-- decision back with a second statement, and answered in-batch duplicates
-- itself. Now the function decides and records each outcome where it takes
-- the money, and answers a duplicate (earlier in the batch, or in an
-- earlier batch) with the recorded outcome, in the batch's order: one
-- user's payments are still applied one after the other.
--
-- The reasons are those of the message contract (README, "Messages").
DROP FUNCTION payment_batch(uuid[], text[], bigint[]);

CREATE FUNCTION payment_batch(p_order uuid[], p_user text[], p_amount bigint[])
RETURNS TABLE (order_id uuid, replayed boolean, outcome text, reason text, user_id text,
               amount bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    i int;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_order, 1), 0) LOOP
        order_id := p_order[i];
        -- The claim: the first request for an order id inserts its row.
        INSERT INTO inbox AS ib (order_id, user_id, amount)
        VALUES (p_order[i], p_user[i], p_amount[i])
        ON CONFLICT (order_id) DO NOTHING;
        replayed := NOT FOUND;
        IF NOT replayed THEN
            -- Paid when the account holds enough: the conditional UPDATE
            -- holds its row lock until the batch commits; never below 0.
            UPDATE accounts a SET balance = a.balance - p_amount[i], updated_at = now()
             WHERE a.user_id = p_user[i] AND a.balance >= p_amount[i];
            IF FOUND THEN
                INSERT INTO ledger (user_id, kind, amount, order_id)
                VALUES (p_user[i], 'debit', p_amount[i], p_order[i]::text);
                UPDATE inbox ib SET outcome = 'completed' WHERE ib.order_id = p_order[i];
            ELSE
                UPDATE inbox ib SET outcome = 'failed',
                       reason = CASE WHEN EXISTS (SELECT 1 FROM accounts a
                                                   WHERE a.user_id = p_user[i])
                                     THEN 'insufficient_funds' ELSE 'account_not_found' END
                 WHERE ib.order_id = p_order[i];
            END IF;
        END IF;
        -- What is recorded, new or not: a replay answers the same.
        SELECT ib.outcome, ib.reason, ib.user_id, ib.amount
          INTO outcome, reason, user_id, amount
          FROM inbox ib WHERE ib.order_id = p_order[i];
        RETURN NEXT;
    END LOOP;
END
$$;
