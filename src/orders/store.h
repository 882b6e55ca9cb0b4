/* The orders service's SQL, all of it, as named prepared statements. Every
 * function runs in the caller's connection and transaction. */
#ifndef ORDERS_STORE_H
#define ORDERS_STORE_H

#include "lib/db.h"
#include "orders/order.h"

extern const db_stmt orders_stmts[];

/* Inserts the NEW orders[0..n) (id, user_id, amount, description,
 * traceparent) and, in the same statement, each one's message payloads[i]
 * into the outbox for `topic` in the order's trace, in their order; the first re-drive of each is
 * due after `redrive_ms`. All or none. Returns how many were stored (n), out[i] being orders[i] as
 * stored, or -DB_*. */
int store_orders_create_many(db_conn *c, const order *orders, const char *const *payloads, int n,
                             const char *topic, int redrive_ms, order *out);

/* The orders of ids[0..n) that exist (ids given twice, once), in no
 * particular order: up to n in `out`. Returns the count or -DB_*. */
int store_orders_get(db_conn *c, const char *const *ids, int n, order *out);

/* Up to `limit` orders of `user_id`, newest first, created before the
 * order with seq `before` (0: from the newest). Returns the count (into
 * out[0..limit)), or -DB_*. */
int store_order_list(db_conn *c, const char *user_id, int64_t before, int limit, order *out);

/* Moves the order of each of the `n` payment results from NEW to the
 * status and reason it decides (order_final_status), if the result names
 * the order's own user and amount. Orders no longer NEW, or unknown, do
 * not change (a replay); nor does a payment.completed for an order its
 * owner asked to cancel (the cancel's outcome follows), nor an order whose
 * result names another user or amount (store_results_mismatched finds
 * those). Returns how many changed, as they are now (into
 * changed[0..n)), or -DB_*. */
int store_orders_finish(db_conn *c, const payment_msg *results, int n, order *changed);

/* A payment result that names an existing order with another user or
 * amount: its place in the batch, and what the order has. */
typedef struct store_mismatch {
    int index;
    char user_id[VALID_USER_ID_MAX + 1];
    int64_t amount;
} store_mismatch;

/* The results of results[0..n) whose order exists with another user or
 * amount, in batch order: up to n into `out`. Returns the count or -DB_*. */
int store_results_mismatched(db_conn *c, const payment_msg *results, int n, store_mismatch *out);

/* Records the wish to cancel order `id` if it is still NEW, and in the same
 * statement puts `payload` (its payment.cancel) into the outbox for
 * `topic`, in the trace `traceparent` ("": none). Returns 1 with the order
 * as it is now in `out`, 0 when it is no longer NEW (or unknown), or
 * -DB_*. */
int store_order_cancel(db_conn *c, const char *id, const char *topic, const char *payload,
                       const char *traceparent, order *out);

/* What a re-drive may send again: its back-off (after_ms * 2^n, at most
 * max_ms), and only requests sent before sent_before_ms (epoch ms), those
 * payments has read past. */
typedef struct redrive_window {
    int after_ms, max_ms;
    int64_t sent_before_ms;
} redrive_window;

/* Claims up to `limit` NEW orders whose re-drive is due, whose request was
 * sent inside the window and is no longer in the outbox, and schedules
 * their next one. Returns the count (into out[]), or -DB_*. */
int store_redrive_claim(db_conn *c, int limit, const redrive_window *w, order *out);

/* 1 when an order or a refund is due a re-drive (whatever the window), 0
 * when none, or -DB_*. */
int store_redrive_due(db_conn *c);

/* Locks order `id`'s row for the caller's transaction and reads it.
 * Returns 1, 0 when unknown, or -DB_*. */
int store_order_lock(db_conn *c, const char *id, order *out);

/* Records refund `id` of `amount` of order `order_id` (locked by the
 * caller, its checks made), adds it to the order's refunds, and in the
 * same statement puts `payload` (its refund.requested) into the outbox for
 * `topic`, in the trace `traceparent` ("": none); its first re-drive is
 * due after `redrive_ms`. Returns 0 with the refund as stored in `out`,
 * -ENOENT, or -DB_*. */
int store_refund_create(db_conn *c, const char *id, const char *order_id, int64_t amount,
                        int redrive_ms, const char *topic, const char *payload,
                        const char *traceparent, refund *out);

/* The refunds of order_ids[0..n), oldest first: up to `max` in `out`.
 * Returns the count or -DB_*. */
int store_refunds_of(db_conn *c, const char *const *order_ids, int n, refund *out, int max);

/* Moves the refund of each of the `n` refund results from PENDING to
 * COMPLETED or FAILED, if the result names the refund's order and amount
 * (else, or no longer PENDING: a replay, nothing changes), and adds it to
 * its order: refunded_amount, REFUNDED when all of it is back. Returns how
 * many orders changed, as they are now (into changed[0..n)), or -DB_*. */
int store_refunds_finish(db_conn *c, const payment_msg *results, int n, order *changed);

/* Claims up to `limit` PENDING refunds whose re-drive is due and schedules
 * their next one, as store_redrive_claim does for orders. Returns the
 * count (into out[]), or -DB_*. */
int store_refund_redrive_claim(db_conn *c, int limit, const redrive_window *w, refund *out);

/* Announces changed orders on STORE_CHANNEL, delivered at commit. */
#define STORE_CHANNEL "order_updates"
int store_notify(db_conn *c, const char *payload);

#endif
