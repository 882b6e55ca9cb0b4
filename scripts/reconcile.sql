-- make reconcile's checks across the two databases (scripts/reconcile.sh):
-- run on payments' database, with orders' facts in the session's temporary
-- tables o (its orders) and r (its refunds) and :users the LIKE pattern of
-- the user ids checked. One row per check: name, checked, mismatches, one
-- mismatch.
ANALYZE o;
ANALYZE r;
CREATE TEMP TABLE m AS
SELECT l.order_id::uuid AS order_id,
       count(*) FILTER (WHERE kind = 'debit') AS debits,
       coalesce(sum(amount) FILTER (WHERE kind = 'debit'), 0) AS taken,
       coalesce(sum(amount) FILTER (WHERE kind = 'cancellation'), 0) AS cancelled,
       coalesce(sum(amount) FILTER (WHERE kind = 'refund'), 0) AS refunded
  FROM ledger l WHERE l.order_id IS NOT NULL AND l.user_id LIKE :'users' GROUP BY l.order_id;
-- Paid (FINISHED, or REFUNDED since): one debit of its amount, nothing
-- given back by a cancel, and what its refunds gave back is what orders
-- says came back.
SELECT 'paid_orders_debited_once', count(*), count(*) FILTER (WHERE NOT ok),
       min(id || ': ' || status || ' ' || amount || ', taken ' || coalesce(taken, 0) || ' by '
           || coalesce(debits, 0) || ' debits, refunded ' || coalesce(back, 0))
         FILTER (WHERE NOT ok)
  FROM (SELECT o.*, m.taken, m.debits, m.refunded AS back,
               coalesce(m.debits = 1 AND m.taken = o.amount AND m.cancelled = 0
                        AND (m.refunded = o.refunded -- or more, with a refund in flight
                             OR m.refunded > o.refunded AND EXISTS (
                                SELECT 1 FROM r WHERE r.order_id = o.id AND r.status = 'PENDING')),
                        false) AS ok
          FROM o LEFT JOIN m ON m.order_id = o.id WHERE o.status IN ('FINISHED', 'REFUNDED')) x;
-- Not paid (CANCELLED): whatever was taken went back.
SELECT 'other_orders_cost_nothing', count(*), count(*) FILTER (WHERE NOT ok),
       min(id || ': ' || status || ', net ' || net) FILTER (WHERE NOT ok)
  FROM (SELECT o.id, o.status, coalesce(m.taken - m.cancelled - m.refunded, 0) AS net,
               coalesce(m.taken - m.cancelled - m.refunded, 0) = 0 AS ok
          FROM o LEFT JOIN m ON m.order_id = o.id WHERE o.status = 'CANCELLED') x;
-- Every debit is an order's.
SELECT 'every_debit_has_its_order', count(*), count(*) FILTER (WHERE o.id IS NULL),
       min(m.order_id || ': debited, no such order') FILTER (WHERE o.id IS NULL)
  FROM m LEFT JOIN o ON o.id = m.order_id WHERE m.debits > 0;
-- Each COMPLETED refund credited with its amount (once: the ledger's
-- refund_id is unique), none other, and each credit a refund orders knows.
SELECT 'completed_refunds_credited_once', count(*), count(*) FILTER (WHERE NOT ok),
       min(what) FILTER (WHERE NOT ok)
  FROM (SELECT CASE r.status WHEN 'COMPLETED' THEN l.amount IS NOT DISTINCT FROM r.amount
                             WHEN 'PENDING' THEN true -- in flight
                             ELSE l.refund_id IS NULL END AS ok,
               r.id || ': ' || r.status || ' ' || r.amount || ', credited '
                 || coalesce(l.amount, 0) AS what
          FROM r LEFT JOIN ledger l ON l.refund_id = r.id
        UNION ALL
        SELECT false, l.refund_id || ': credited ' || l.amount || ', unknown to orders'
          FROM ledger l LEFT JOIN r ON r.id = l.refund_id
         WHERE l.kind = 'refund' AND l.user_id LIKE :'users' AND r.id IS NULL) x;
-- No order given back more than it cost.
SELECT 'no_order_refunded_above_its_amount', count(*),
       count(*) FILTER (WHERE m.cancelled + m.refunded > o.amount),
       min(o.id || ': cost ' || o.amount || ', back ' || m.cancelled + m.refunded)
         FILTER (WHERE m.cancelled + m.refunded > o.amount)
  FROM o JOIN m ON m.order_id = o.id;
