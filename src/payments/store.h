/* The payments service's SQL, all of it, as named prepared statements.
 * Every function runs inside the caller's connection and transaction. */
#ifndef PAYMENTS_STORE_H
#define PAYMENTS_STORE_H

#include "lib/db.h"
#include "lib/msg.h"
#include "payments/account.h"

#include <stdbool.h>

/* Statements to give db_pool_new. */
extern const db_stmt payments_stmts[];

/* Creates an empty account. Returns 0, -EEXIST, or -DB_*. Never aborts the
 * transaction on a duplicate. */
int store_account_create(db_conn *c, const char *user_id, account *out);

/* The accounts of user_ids[0..n) that exist (an id given twice, once), in
 * no particular order: up to n in `out`. Returns the count or -DB_*. */
int store_accounts_get(db_conn *c, const char *const *user_ids, int n, account *out);

/* Adds `amount` to the balance and records the deposit in the ledger, in
 * one statement. Returns 0 with the new state, -ENOENT, -ERANGE (the
 * balance would overflow), or -DB_*. */
int store_deposit(db_conn *c, const char *user_id, int64_t amount, account *out);

/* Handles a batch of payment.requested exactly once, in the caller's
 * transaction and in message order: records each in the inbox (unique on
 * the order id), locks the batch's accounts (FOR UPDATE) and decides each
 * request on what the account holds at that point of the batch, debits
 * the paid ones, writes each debit to the ledger, and records the outcome.
 * A request for an order already decided (before, or earlier in the
 * batch, or cancelled) changes nothing: results[i] is the recorded outcome
 * (a cancelled order's is payment.failed, reason "cancelled") and
 * replayed[i] is set, so that the caller publishes it again. Returns 0 or
 * -DB_*. */
int store_payment_batch(db_conn *c, const payment_msg *reqs, int n, payment_msg *results,
                        bool *replayed);

/* Handles a batch of payment.cancel, in the caller's transaction and in
 * message order: "cancelled" becomes each order's permanent outcome unless
 * it had failed (nothing taken); a paid order's amount goes back to its
 * account, with a ledger row of its own (credited[i]). results[i] is the
 * outcome recorded after: payment.failed with reason "cancelled", or the
 * failure it had. Returns 0 or -DB_*. */
int store_cancel_batch(db_conn *c, const payment_msg *cancels, int n, payment_msg *results,
                       bool *credited);

/* Handles a batch of refund.requested exactly once, in the caller's
 * transaction and in message order: records each refund id in the refund
 * inbox and credits the refund's amount back to the account it was paid
 * from, with a ledger row of its own, if its order was paid by that user
 * and its order's refunds add up to no more than the payment; else it
 * fails ("not_paid", "exceeds_payment"). A refund decided before changes
 * nothing: results[i] is its recorded outcome (refund.completed or
 * refund.failed) and replayed[i] is set. Returns 0 or -DB_*. */
int store_refund_batch(db_conn *c, const payment_msg *refunds, int n, payment_msg *results,
                       bool *replayed);

#endif
