-- Cancellation (README, "Cancel and refund"): when the owner asked to
-- cancel a NEW order. From then on a payment.completed for it changes
-- nothing (payments gives the money back when it sees the cancel, which
-- follows the request on its partition, and answers payment.failed with
-- reason "cancelled"), and a re-drive sends the cancel, not the request.
ALTER TABLE orders ADD COLUMN cancel_requested_at timestamptz;
