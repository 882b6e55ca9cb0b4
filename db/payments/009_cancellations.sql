-- Cancellation (README, "Cancel and refund"). A payment.cancel for an order
-- makes "cancelled" its permanent outcome in the inbox: a request for it
-- that comes later (re-driven, replayed) is answered with that outcome and
-- never debits. If the order had been paid, the amount goes back to its
-- owner in the same transaction, as a ledger row of its own: the debit
-- stays, and the credit that undoes it sits beside it.
ALTER TABLE inbox DROP CONSTRAINT inbox_outcome_check;
ALTER TABLE inbox ADD CONSTRAINT inbox_outcome_check
    CHECK (outcome IN ('completed', 'failed', 'cancelled'));

-- A debit and its cancellation both name the order: one of each at most.
ALTER TABLE ledger DROP CONSTRAINT ledger_kind_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_kind_check
    CHECK (kind IN ('deposit', 'debit', 'cancellation'));
ALTER TABLE ledger DROP CONSTRAINT ledger_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_check
    CHECK ((kind IN ('debit', 'cancellation')) = (order_id IS NOT NULL));
ALTER TABLE ledger DROP CONSTRAINT ledger_order_id_key;
ALTER TABLE ledger ADD CONSTRAINT ledger_order_kind_key UNIQUE (order_id, kind);

-- One row per cancel, in the batch's order, with the outcome recorded for
-- its order after it: 'cancelled' (and whether money went back), or the
-- outcome the order already had that a cancel does not change ('failed':
-- nothing was taken; 'cancelled': cancelled before).
CREATE FUNCTION payment_cancel_batch(p_order uuid[], p_user text[], p_amount bigint[])
RETURNS TABLE (order_id uuid, outcome text, reason text, user_id text, amount bigint,
               credited boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    i int;
    v_outcome text;
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
            SELECT ib.outcome INTO v_outcome FROM inbox ib
             WHERE ib.order_id = p_order[i] FOR UPDATE;
            IF v_outcome = 'completed' THEN
                -- Paid: the money goes back to whom it was taken from.
                UPDATE accounts a SET balance = a.balance + ib.amount, updated_at = now()
                  FROM inbox ib
                 WHERE ib.order_id = p_order[i] AND a.user_id = ib.user_id;
                INSERT INTO ledger (user_id, kind, amount, order_id)
                SELECT ib.user_id, 'cancellation', ib.amount, p_order[i]::text
                  FROM inbox ib WHERE ib.order_id = p_order[i];
                UPDATE inbox ib SET outcome = 'cancelled', reason = 'cancelled'
                 WHERE ib.order_id = p_order[i];
                credited := true;
            END IF;
        END IF;
        SELECT ib.outcome, ib.reason, ib.user_id, ib.amount
          INTO outcome, reason, user_id, amount
          FROM inbox ib WHERE ib.order_id = p_order[i];
        RETURN NEXT;
    END LOOP;
END
$$;
