-- One round trip per consumer batch instead of several per message: claims
-- each request in the inbox, in the batch's order, and for a new one takes
-- the money when the funds suffice (the conditional UPDATE holds the
-- account's row lock until the batch commits). It only reports what it
-- found; the payments service decides the outcome (src/payments/payment.c)
-- and records it in the same transaction.
CREATE FUNCTION payment_batch(p_order uuid[], p_user text[], p_amount bigint[])
RETURNS TABLE (order_id uuid, replayed boolean, debited boolean, has_account boolean,
               outcome text, reason text, user_id text, amount bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    i int;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_order, 1), 0) LOOP
        order_id := p_order[i];
        INSERT INTO inbox AS ib (order_id, user_id, amount)
        VALUES (p_order[i], p_user[i], p_amount[i])
        ON CONFLICT (order_id) DO NOTHING;
        IF NOT FOUND THEN
            replayed := true;
            debited := false;
            has_account := false;
            SELECT ib.outcome, ib.reason, ib.user_id, ib.amount
              INTO outcome, reason, user_id, amount
              FROM inbox ib WHERE ib.order_id = p_order[i];
        ELSE
            replayed := false;
            outcome := NULL;
            reason := NULL;
            user_id := p_user[i];
            amount := p_amount[i];
            UPDATE accounts a SET balance = a.balance - p_amount[i], updated_at = now()
             WHERE a.user_id = p_user[i] AND a.balance >= p_amount[i];
            debited := FOUND;
            IF debited THEN
                INSERT INTO ledger (user_id, kind, amount, order_id)
                VALUES (p_user[i], 'debit', p_amount[i], p_order[i]::text);
                has_account := true;
            ELSE
                has_account := EXISTS (SELECT 1 FROM accounts a WHERE a.user_id = p_user[i]);
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
