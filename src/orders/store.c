#include "orders/store.h"
#include "lib/books.h"
#include "lib/outbox.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ORDER_COLS                                                                                 \
    "id, user_id, amount, description, status, coalesce(reason, ''), " DB_TS(                      \
        "created_at") ", " DB_TS("updated_at") ", seq, cancel_requested_at IS NOT NULL,"           \
                                               " refund_reserved, refunded_amount, refund_count,"  \
                                               " coalesce(traceparent, '')"
#define REFUND_COLS                                                                                \
    "id, order_id, user_id, amount, status, coalesce(reason, ''), " DB_TS(                         \
        "created_at") ", " DB_TS("updated_at")

/* The re-drive claims' condition on what may be sent again: only requests
 * payments has read past (sent before $4, epoch ms), and none still in the
 * outbox. Re-sending one still on its way only adds to a backlog (an
 * outage of payments or of Kafka). The outbox's oldest row by id, less a
 * second: ids and now() may disagree by a transaction's length. */
#define REDRIVE_GATE                                                                               \
    "   AND sent_at < to_timestamp($4::float8 / 1000)"                                             \
    "   AND sent_at < coalesce(" OUTBOX_OLDEST_QUEUED_AT " - interval '1 second', 'infinity')"

const db_stmt orders_stmts[] = {
    /* A group's orders and their payment requests in one statement; the
     * requests enter the outbox, and the stored orders come back, in the
     * order given. */
    {"orders_create_many",
     "WITH o AS (INSERT INTO orders (id, user_id, amount, description, next_redrive_at,"
     "                               traceparent)"
     "           SELECT id, u, a, d, now() + make_interval(secs => $5::float8 / 1000),"
     "                  nullif(tp, '')"
     "           FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $8::text[])"
     "                AS t(id, u, a, d, tp)"
     "           RETURNING *),"
     "     m AS (" OUTBOX_INSERT "           SELECT $6, u, p, nullif(tp, '')"
     "           FROM unnest($2::text[], $7::text[], $8::text[]) WITH ORDINALITY AS t(u, p, tp, n)"
     "           ORDER BY n)"
     " SELECT " ORDER_COLS " FROM o"
     " JOIN unnest($1::uuid[]) WITH ORDINALITY AS g(gid, gn) ON g.gid = o.id ORDER BY g.gn"},
    {"orders_get", "SELECT " ORDER_COLS " FROM orders WHERE id = ANY($1::uuid[])"},
    {"order_list", "SELECT " ORDER_COLS " FROM orders WHERE user_id = $1"
                   " AND ($2::bigint = 0 OR seq < $2) ORDER BY seq DESC LIMIT $3"},
    /* "Not final" rather than "status = 'NEW'": the partial re-drive index
     * matches the latter, and the planner chose to read every NEW order
     * (and the index's dead entries) and hash-join them with the batch, a
     * cost that grows with the backlog. Written this way, each row is one
     * primary-key lookup. */
    {"orders_finish",
     "UPDATE orders o"
     " SET status = r.to_status, reason = nullif(r.to_reason, ''), updated_at = now()"
     " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[])"
     "      AS r(order_id, to_status, to_reason, by_user, of_amount)"
     " WHERE o.id = r.order_id AND o.status NOT IN ('FINISHED', 'CANCELLED', 'REFUNDED')"
     /* The order's own user and amount, or the result is not its. */
     "   AND o.user_id = r.by_user AND o.amount = r.of_amount"
     /* Asked to cancel: a payment is not taken as final (payments gives
      * it back when it sees the cancel, and answers "cancelled"). */
     "   AND NOT (r.to_status = 'FINISHED' AND o.cancel_requested_at IS NOT NULL)"
     " RETURNING " ORDER_COLS},
    /* Results that name an existing order with another user or amount
     * (their 0-based place in the batch, and what the order has). */
    {"results_mismatched",
     "SELECT r.n - 1, o.user_id, o.amount"
     " FROM unnest($1::uuid[], $2::text[], $3::bigint[]) WITH ORDINALITY AS r(id, u, a, n)"
     " JOIN orders o ON o.id = r.id WHERE o.user_id <> r.u OR o.amount <> r.a ORDER BY r.n"},
    /* The owner's wish to cancel a NEW order, and the payment.cancel that
     * tells payments, in one statement; asked again, the message goes
     * again (payments answers a cancel twice the same). No row: no longer
     * NEW. */
    {"order_cancel",
     "WITH c AS (UPDATE orders SET cancel_requested_at = coalesce(cancel_requested_at, now()),"
     "                  updated_at = now()"
     "           WHERE id = $1 AND status = 'NEW' RETURNING *),"
     "     m AS (" OUTBOX_INSERT " SELECT $2, c.user_id, $3, nullif($4, '') FROM c)"
     " SELECT " ORDER_COLS " FROM c"},
    /* A refund: its order's row is locked first (order_lock), the checks
     * made on it (order_refund_rule_for), then the refund, its share of
     * the order and its refund.requested commit together. */
    {"order_lock", "SELECT " ORDER_COLS " FROM orders WHERE id = $1 FOR UPDATE"},
    {"refund_create",
     "WITH o AS (UPDATE orders SET refund_reserved = refund_reserved + $3,"
     "                  refund_count = refund_count + 1, updated_at = now()"
     "           WHERE id = $2 RETURNING id, user_id),"
     "     r AS (INSERT INTO refunds (id, order_id, user_id, amount, next_redrive_at)"
     "           SELECT $1, o.id, o.user_id, $3, now() + make_interval(secs => $4::float8 / 1000)"
     "           FROM o RETURNING *),"
     "     m AS (" OUTBOX_INSERT " SELECT $5, o.user_id, $6, nullif($7, '') FROM o)"
     " SELECT " REFUND_COLS " FROM r"},
    {"refunds_of",
     "SELECT " REFUND_COLS " FROM refunds WHERE order_id = ANY($1::uuid[]) ORDER BY seq"},
    /* A refund's result moves it from PENDING if it names the refund, its
     * order and its amount; the orders' sums follow, and an order all of
     * whose money is back is REFUNDED. The orders that changed come back. */
    {"refunds_finish",
     "WITH r AS (UPDATE refunds f SET status = x.to_status, reason = nullif(x.why, ''),"
     "                  updated_at = now()"
     "           FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[])"
     "                AS x(rid, oid, amt, to_status, why)"
     "           WHERE f.id = x.rid AND f.order_id = x.oid AND f.amount = x.amt"
     "             AND f.status = 'PENDING'"
     "           RETURNING f.order_id, f.amount, f.status),"
     "     s AS (SELECT r.order_id AS oid,"
     "                  coalesce(sum(r.amount) FILTER (WHERE r.status = 'COMPLETED'), 0) AS back,"
     "                  coalesce(sum(r.amount) FILTER (WHERE r.status = 'FAILED'), 0) AS freed"
     "           FROM r GROUP BY r.order_id)"
     " UPDATE orders o SET refunded_amount = o.refunded_amount + s.back,"
     "        refund_reserved = o.refund_reserved - s.freed, updated_at = now(),"
     "        status = CASE WHEN o.refunded_amount + s.back = o.amount THEN 'REFUNDED'"
     "                      ELSE o.status END"
     " FROM s WHERE o.id = s.oid"
     " RETURNING " ORDER_COLS},
    {"refund_redrive_claim",
     "UPDATE refunds SET redrive_count = redrive_count + 1, sent_at = now(),"
     " next_redrive_at = now() + make_interval(secs =>"
     "   least($2::float8 * power(2, least(redrive_count, 30)), $3::float8) / 1000)"
     " WHERE id IN (SELECT id FROM refunds WHERE status = 'PENDING' AND next_redrive_at <= "
     "now()" REDRIVE_GATE "              ORDER BY next_redrive_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
     " RETURNING " REFUND_COLS},
    {"redrive_claim",
     "UPDATE orders SET redrive_count = redrive_count + 1, sent_at = now(),"
     /* The exponent stops at 30: 2^redrive_count overflows float8 near
      * 1,024 re-drives (an order NEW for ~17 h at the 60 s cap), and one
      * such row would fail the claim of every other. */
     " next_redrive_at = now() + make_interval(secs =>"
     "   least($2::float8 * power(2, least(redrive_count, 30)), $3::float8) / 1000)"
     " WHERE id IN (SELECT id FROM orders WHERE status = 'NEW' AND next_redrive_at <= "
     "now()" REDRIVE_GATE "              ORDER BY next_redrive_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
     " RETURNING " ORDER_COLS},
    /* Whether any order or refund is due a re-drive (both partial indexes):
     * only then is the broker asked how far payments has read. */
    {"redrive_due",
     "SELECT EXISTS (SELECT 1 FROM orders WHERE status = 'NEW' AND next_redrive_at <= now())"
     "    OR EXISTS (SELECT 1 FROM refunds WHERE status = 'PENDING' AND next_redrive_at <= now())"},
    /* One notification per chunk of a batch's changes, not per order:
     * NOTIFY serialises commits, so it stays off the per-order path. */
    {"orders_notify", "SELECT pg_notify('" STORE_CHANNEL "', $1)"},
    /* GET /reconciliation (lib/books.h): the orders of users LIKE $1.
     * Each order's sums are those of its refunds; what is in flight (NEW
     * orders, PENDING refunds) is counted, not judged. */
    {BOOKS_STMT,
     "WITH r AS (SELECT order_id, count(*) AS n,"
     "                  coalesce(sum(amount) FILTER (WHERE status = 'COMPLETED'), 0) AS back,"
     "                  coalesce(sum(amount) FILTER (WHERE status <> 'FAILED'), 0) AS reserved"
     "           FROM refunds WHERE user_id LIKE $1 GROUP BY order_id),"
     "     s AS (SELECT o.id, o.refunded_amount, o.refund_reserved, o.refund_count,"
     "                  coalesce(r.back, 0) AS back, coalesce(r.reserved, 0) AS reserved,"
     "                  coalesce(r.n, 0) AS n"
     "           FROM orders o LEFT JOIN r ON r.order_id = o.id"
     "           WHERE o.user_id LIKE $1 AND (o.refund_count > 0 OR r.n IS NOT NULL))"
     " SELECT 'order_refunds_add_up', count(*),"
     "        count(*) FILTER (WHERE refunded_amount <> back OR refund_reserved <> reserved"
     "                            OR refund_count <> n),"
     "        min(id || ': refunded ' || refunded_amount || ', its refunds ' || back)"
     "          FILTER (WHERE refunded_amount <> back OR refund_reserved <> reserved"
     "                     OR refund_count <> n)"
     "   FROM s"
     " UNION ALL"
     " SELECT 'in_flight', count(*), 0, NULL"
     "   FROM (SELECT id FROM orders WHERE status = 'NEW' AND user_id LIKE $1"
     "         UNION ALL SELECT id FROM refunds WHERE status = 'PENDING' AND user_id LIKE $1) f"},
    {NULL, NULL},
};

static void read_order(PGresult *r, int row, order *o)
{
    snprintf(o->id, sizeof o->id, "%s", PQgetvalue(r, row, 0));
    snprintf(o->user_id, sizeof o->user_id, "%s", PQgetvalue(r, row, 1));
    o->amount = strtoll(PQgetvalue(r, row, 2), NULL, 10);
    snprintf(o->description, sizeof o->description, "%s", PQgetvalue(r, row, 3));
    snprintf(o->status, sizeof o->status, "%s", PQgetvalue(r, row, 4));
    snprintf(o->reason, sizeof o->reason, "%s", PQgetvalue(r, row, 5));
    snprintf(o->created_at, sizeof o->created_at, "%s", PQgetvalue(r, row, 6));
    snprintf(o->updated_at, sizeof o->updated_at, "%s", PQgetvalue(r, row, 7));
    o->seq = strtoll(PQgetvalue(r, row, 8), NULL, 10);
    o->cancel_requested = strcmp(PQgetvalue(r, row, 9), "t") == 0;
    o->refund_reserved = strtoll(PQgetvalue(r, row, 10), NULL, 10);
    o->refunded_amount = strtoll(PQgetvalue(r, row, 11), NULL, 10);
    o->refund_count = atoi(PQgetvalue(r, row, 12));
    snprintf(o->traceparent, sizeof o->traceparent, "%s", PQgetvalue(r, row, 13));
}

static void read_refund(PGresult *r, int row, refund *f)
{
    snprintf(f->id, sizeof f->id, "%s", PQgetvalue(r, row, 0));
    snprintf(f->order_id, sizeof f->order_id, "%s", PQgetvalue(r, row, 1));
    snprintf(f->user_id, sizeof f->user_id, "%s", PQgetvalue(r, row, 2));
    f->amount = strtoll(PQgetvalue(r, row, 3), NULL, 10);
    snprintf(f->status, sizeof f->status, "%s", PQgetvalue(r, row, 4));
    snprintf(f->reason, sizeof f->reason, "%s", PQgetvalue(r, row, 5));
    snprintf(f->created_at, sizeof f->created_at, "%s", PQgetvalue(r, row, 6));
    snprintf(f->updated_at, sizeof f->updated_at, "%s", PQgetvalue(r, row, 7));
}

/* Runs `stmt` and reads up to `max` refunds; returns the count or -DB_*. */
static int run_refunds(db_conn *c, const char *stmt, int n, const char *const *params, refund *out,
                       int max)
{
    PGresult *r = NULL;
    int rc = db_exec(c, stmt, n, params, &r);
    if (rc == 0) {
        rc = PQntuples(r) < max ? PQntuples(r) : max;
        for (int i = 0; i < rc; i++)
            read_refund(r, i, &out[i]);
    }
    PQclear(r);
    return rc;
}

/* Runs `stmt` and reads up to `max` orders; returns the count or -DB_*. */
static int run(db_conn *c, const char *stmt, int n, const char *const *params, order *out, int max)
{
    PGresult *r = NULL;
    int rc = db_exec(c, stmt, n, params, &r);
    if (rc == 0) {
        rc = PQntuples(r) < max ? PQntuples(r) : max;
        for (int i = 0; i < rc; i++)
            read_order(r, i, &out[i]);
    }
    PQclear(r);
    return rc;
}

int store_orders_create_many(db_conn *c, const order *orders, const char *const *payloads, int n,
                             const char *topic, int redrive_ms, order *out)
{
    db_array ids, users, amounts, descriptions, messages, traces;
    db_array_begin(&ids), db_array_begin(&users), db_array_begin(&amounts);
    db_array_begin(&descriptions), db_array_begin(&messages), db_array_begin(&traces);
    for (int i = 0; i < n; i++) {
        db_array_add(&ids, orders[i].id);
        db_array_add(&users, orders[i].user_id);
        db_array_add_int(&amounts, orders[i].amount);
        db_array_add(&descriptions, orders[i].description);
        db_array_add(&messages, payloads[i]);
        db_array_add(&traces, orders[i].traceparent);
    }
    db_array_end(&ids), db_array_end(&users), db_array_end(&amounts);
    db_array_end(&descriptions), db_array_end(&messages), db_array_end(&traces);
    char after[16];
    snprintf(after, sizeof after, "%d", redrive_ms);
    const char *params[] = {ids.text, users.text, amounts.text,  descriptions.text,
                            after,    topic,      messages.text, traces.text};
    int rc = run(c, "orders_create_many", 8, params, out, n);
    db_array_free(&ids), db_array_free(&users), db_array_free(&amounts);
    db_array_free(&descriptions), db_array_free(&messages), db_array_free(&traces);
    return rc;
}

int store_orders_get(db_conn *c, const char *const *ids, int n, order *out)
{
    db_array a;
    db_array_of(&a, ids, n);
    const char *params[] = {a.text};
    int rc = run(c, "orders_get", 1, params, out, n);
    db_array_free(&a);
    return rc;
}

int store_order_list(db_conn *c, const char *user_id, int64_t before, int limit, order *out)
{
    char b[24], l[16];
    snprintf(b, sizeof b, "%" PRId64, before);
    snprintf(l, sizeof l, "%d", limit);
    const char *params[] = {user_id, b, l};
    return run(c, "order_list", 3, params, out, limit);
}

int store_orders_finish(db_conn *c, const payment_msg *results, int n, order *changed)
{
    db_array ids, statuses, reasons, users, amounts;
    db_array_begin(&ids), db_array_begin(&statuses), db_array_begin(&reasons);
    db_array_begin(&users), db_array_begin(&amounts);
    for (int i = 0; i < n; i++) {
        const char *status, *reason;
        order_final_status(&results[i], &status, &reason);
        db_array_add(&ids, results[i].order_id);
        db_array_add(&statuses, status);
        db_array_add(&reasons, reason);
        db_array_add(&users, results[i].user_id);
        db_array_add_int(&amounts, results[i].amount);
    }
    db_array_end(&ids), db_array_end(&statuses), db_array_end(&reasons);
    db_array_end(&users), db_array_end(&amounts);
    const char *params[] = {ids.text, statuses.text, reasons.text, users.text, amounts.text};
    int rc = run(c, "orders_finish", 5, params, changed, n);
    db_array_free(&ids), db_array_free(&statuses), db_array_free(&reasons);
    db_array_free(&users), db_array_free(&amounts);
    return rc;
}

int store_results_mismatched(db_conn *c, const payment_msg *results, int n, store_mismatch *out)
{
    db_array ids, users, amounts;
    db_array_begin(&ids), db_array_begin(&users), db_array_begin(&amounts);
    for (int i = 0; i < n; i++) {
        db_array_add(&ids, results[i].order_id);
        db_array_add(&users, results[i].user_id);
        db_array_add_int(&amounts, results[i].amount);
    }
    db_array_end(&ids), db_array_end(&users), db_array_end(&amounts);
    const char *params[] = {ids.text, users.text, amounts.text};
    PGresult *r = NULL;
    int rc = db_exec(c, "results_mismatched", 3, params, &r);
    if (rc == 0) {
        rc = PQntuples(r) < n ? PQntuples(r) : n;
        for (int i = 0; i < rc; i++) {
            out[i].index = atoi(PQgetvalue(r, i, 0));
            snprintf(out[i].user_id, sizeof out[i].user_id, "%s", PQgetvalue(r, i, 1));
            out[i].amount = strtoll(PQgetvalue(r, i, 2), NULL, 10);
        }
    }
    PQclear(r);
    db_array_free(&ids), db_array_free(&users), db_array_free(&amounts);
    return rc;
}

int store_order_cancel(db_conn *c, const char *id, const char *topic, const char *payload,
                       const char *traceparent, order *out)
{
    const char *params[] = {id, topic, payload, traceparent};
    return run(c, "order_cancel", 4, params, out, 1);
}

int store_notify(db_conn *c, const char *payload)
{
    const char *params[] = {payload};
    return db_exec(c, "orders_notify", 1, params, NULL);
}

/* The four parameters of a re-drive claim, as text. */
typedef struct claim_params {
    char limit[16], after[16], max[16], before[24];
    const char *v[4];
} claim_params;

static void claim_params_set(claim_params *p, int limit, const redrive_window *w)
{
    snprintf(p->limit, sizeof p->limit, "%d", limit);
    snprintf(p->after, sizeof p->after, "%d", w->after_ms);
    snprintf(p->max, sizeof p->max, "%d", w->max_ms);
    snprintf(p->before, sizeof p->before, "%" PRId64, w->sent_before_ms);
    p->v[0] = p->limit, p->v[1] = p->after, p->v[2] = p->max, p->v[3] = p->before;
}

int store_redrive_claim(db_conn *c, int limit, const redrive_window *w, order *out)
{
    claim_params p;
    claim_params_set(&p, limit, w);
    return run(c, "redrive_claim", 4, p.v, out, limit);
}

int store_redrive_due(db_conn *c)
{
    PGresult *r = NULL;
    int rc = db_exec(c, "redrive_due", 0, NULL, &r);
    if (rc == 0)
        rc = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return rc;
}

int store_order_lock(db_conn *c, const char *id, order *out)
{
    const char *params[] = {id};
    return run(c, "order_lock", 1, params, out, 1);
}

int store_refund_create(db_conn *c, const char *id, const char *order_id, int64_t amount,
                        int redrive_ms, const char *topic, const char *payload,
                        const char *traceparent, refund *out)
{
    char amt[24], after[16];
    snprintf(amt, sizeof amt, "%" PRId64, amount);
    snprintf(after, sizeof after, "%d", redrive_ms);
    const char *params[] = {id, order_id, amt, after, topic, payload, traceparent};
    int rc = run_refunds(c, "refund_create", 7, params, out, 1);
    return rc == 0 ? -ENOENT : rc < 0 ? rc : 0;
}

int store_refunds_of(db_conn *c, const char *const *order_ids, int n, refund *out, int max)
{
    db_array a;
    db_array_of(&a, order_ids, n);
    const char *params[] = {a.text};
    int rc = run_refunds(c, "refunds_of", 1, params, out, max);
    db_array_free(&a);
    return rc;
}

int store_refunds_finish(db_conn *c, const payment_msg *results, int n, order *changed)
{
    db_array refunds, orders, amounts, statuses, reasons;
    db_array_begin(&refunds), db_array_begin(&orders), db_array_begin(&amounts);
    db_array_begin(&statuses), db_array_begin(&reasons);
    for (int i = 0; i < n; i++) {
        bool done = results[i].type == MSG_REFUND_COMPLETED;
        db_array_add(&refunds, results[i].refund_id);
        db_array_add(&orders, results[i].order_id);
        db_array_add_int(&amounts, results[i].amount);
        db_array_add(&statuses, done ? "COMPLETED" : "FAILED");
        db_array_add(&reasons, done ? "" : results[i].reason);
    }
    db_array_end(&refunds), db_array_end(&orders), db_array_end(&amounts);
    db_array_end(&statuses), db_array_end(&reasons);
    const char *params[] = {refunds.text, orders.text, amounts.text, statuses.text, reasons.text};
    int rc = run(c, "refunds_finish", 5, params, changed, n);
    db_array_free(&refunds), db_array_free(&orders), db_array_free(&amounts);
    db_array_free(&statuses), db_array_free(&reasons);
    return rc;
}

int store_refund_redrive_claim(db_conn *c, int limit, const redrive_window *w, refund *out)
{
    claim_params p;
    claim_params_set(&p, limit, w);
    return run_refunds(c, "refund_redrive_claim", 4, p.v, out, limit);
}
