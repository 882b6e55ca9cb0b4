/* The orders service's message side: the payment.results handler, the
 * re-drive, the purge, and their metrics. */
#include "lib/clock.h"
#include "lib/idem.h"
#include "lib/kafka.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/msg.h"
#include "lib/svc.h"
#include "orders/app.h"
#include "orders/store.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define REDRIVE_BATCH 100

static bool belongs_on_results(msg_type t)
{
    return t == MSG_PAYMENT_COMPLETED || t == MSG_PAYMENT_FAILED || t == MSG_REFUND_COMPLETED ||
           t == MSG_REFUND_FAILED;
}

/* Marks for the dead letters each of results[0..n) (from message
 * from[i]) that names an existing order with another user or amount: a
 * result is applied only to the order it was asked for (a forged or
 * corrupted one changes nothing). Returns how many, or -DB_*. */
static int set_aside_mismatches(db_conn *c, const payment_msg *results, int n, const int *from,
                                consumer_verdict *verdicts)
{
    store_mismatch *bad = calloc((size_t)n, sizeof *bad);
    int found = bad ? store_results_mismatched(c, results, n, bad) : -DB_FAILED;
    for (int k = 0; k < found; k++) {
        const payment_msg *m = &results[bad[k].index];
        consumer_verdict *v = &verdicts[from[bad[k].index]];
        v->poison = true;
        snprintf(v->why, sizeof v->why,
                 "%s for order %s names user %s and amount %" PRId64
                 "; the order is %s's, of %" PRId64,
                 msg_type_name(m->type), m->order_id, m->user_id, m->amount, bad[k].user_id,
                 bad[k].amount);
        log_msg(LOG_WARN, NULL, "payment result set aside: %s", v->why);
    }
    free(bad);
    return found;
}

/* The spans of the message that carried the result for order `id`, among
 * the n messages whose results are results[0..n) (result k from message
 * from[k]); NULL when there is none or no span. */
static consumer_span *span_for(consumer_span *spans, const payment_msg *results, const int *from,
                               int n, const char *id)
{
    for (int k = 0; spans && k < n; k++)
        if (strcmp(results[k].order_id, id) == 0)
            return &spans[from[k]];
    return NULL;
}

/* Begins an "orders status update" span for each of the n results, the
 * child of its message's transaction (result k from message from[k]);
 * NULL when nothing is traced. */
static trace_span *begin_updates(orders_app *app, consumer_span *spans, const payment_msg *results,
                                 const int *from, int n)
{
    trace_span *updates = spans && n ? calloc((size_t)n, sizeof *updates) : NULL;
    for (int k = 0; updates && k < n; k++) {
        trace_span *u = &updates[k];
        trace_begin(app->svc.traces, u, &spans[from[k]].transaction.ctx, "orders status update",
                    TRACE_INTERNAL);
        trace_tag(u, "db.system", "postgresql");
        trace_tag(u, "db.operation.name",
                  msg_is_refund(results[k].type) ? "UPDATE refunds" : "UPDATE orders");
        trace_tag(u, "shop.order_id", results[k].order_id);
        trace_tag(u, "shop.message.type", msg_type_name(results[k].type));
        trace_tag_int(u, "shop.batch.size", n);
    }
    return updates;
}

/* Ends the status update spans of results[0..n), each tagged with its
 * order's status now when changed[0..nchanged) has it ("unchanged": a
 * replay, or not its order's). */
static void end_updates(orders_app *app, trace_span *updates, const payment_msg *results, int n,
                        const order *changed, int nchanged, int rc)
{
    for (int k = 0; updates && k < n; k++) {
        const char *now = "unchanged";
        for (int j = 0; j < nchanged; j++)
            if (strcmp(changed[j].id, results[k].order_id) == 0)
                now = changed[j].status;
        if (rc < 0)
            trace_tag(&updates[k], "error", err_str(rc));
        else
            trace_tag(&updates[k], "shop.order.status", now);
        trace_end(app->svc.traces, &updates[k]);
    }
    free(updates);
}

int orders_handle_results(db_conn *c, rd_kafka_message_t *const *msgs, int n, void *arg,
                          consumer_verdict *verdicts, consumer_span *spans)
{
    orders_app *app = arg;
    /* Payments' results from the front of `results`, refunds' from the back. */
    payment_msg *results = calloc((size_t)n, sizeof *results), decoded;
    order *changed = calloc((size_t)n, sizeof *changed);
    int *from = calloc((size_t)n, sizeof *from); /* each result's message, as results[] */
    if (!results || !changed || !from) {
        free(results), free(changed), free(from);
        return -DB_FAILED;
    }
    int payments = 0, refunds = 0;
    for (int i = 0; i < n; i++) {
        consumer_verdict *v = &verdicts[i];
        if (msg_decode(msgs[i]->payload, msgs[i]->len, &decoded, v->why, sizeof v->why) < 0) {
            v->poison = true;
        } else if (!belongs_on_results(decoded.type)) {
            snprintf(v->why, sizeof v->why, "%s does not belong on %s", msg_type_name(decoded.type),
                     MSG_TOPIC_RESULTS);
            v->poison = true;
        } else if (msg_is_refund(decoded.type)) {
            from[n - ++refunds] = i;
            results[n - refunds] = decoded;
        } else {
            from[payments] = i;
            results[payments++] = decoded;
        }
        if (spans && !v->poison) {
            consumer_tag(&spans[i], "shop.order_id", decoded.order_id);
            consumer_tag(&spans[i], "shop.message.type", msg_type_name(decoded.type));
        }
    }
    int rc = 0, paid = 0, nchanged = 0, mismatched = 0;
    trace_span *updates = begin_updates(app, spans, results, from, payments);
    if (payments)
        rc = paid = store_orders_finish(c, results, payments, changed);
    end_updates(app, updates, results, payments, changed, paid, rc);
    /* Some changed nothing: replays, or results that are not their order's. */
    if (rc >= 0 && paid < payments)
        rc = mismatched = set_aside_mismatches(c, results, payments, from, verdicts);
    /* A refund follows its order's payment: after it, whatever the batch. */
    if (rc >= 0 && refunds) {
        payment_msg *back = &results[n - refunds];
        updates = begin_updates(app, spans, back, &from[n - refunds], refunds);
        rc = store_refunds_finish(c, back, refunds, &changed[paid]);
        end_updates(app, updates, back, refunds, &changed[paid], rc, rc);
    }
    if (rc >= 0)
        nchanged = paid + (refunds ? rc : 0);
    if (rc >= 0 && nchanged) {
        /* Everyone following these users hears of it once this commits. */
        pthread_mutex_lock(&app->changed_lock);
        live_batch_reset(&app->changed);
        uint64_t finished = 0, cancelled = 0, refunded = 0;
        for (int i = 0; i < nchanged; i++) {
            /* Its push goes on in the trace of the message that changed it. */
            consumer_span *s = i < paid ? span_for(spans, results, from, payments, changed[i].id)
                                        : span_for(spans, &results[n - refunds], &from[n - refunds],
                                                   refunds, changed[i].id);
            /* fails only without memory */
            (void)live_batch_add(&app->changed, &changed[i], s ? &s->transaction.ctx : NULL);
            if (i >= paid)
                refunded += strcmp(changed[i].status, "REFUNDED") == 0;
            else if (strcmp(changed[i].status, "FINISHED") == 0)
                finished++;
            else
                cancelled++;
        }
        rc = live_batch_flush(&app->changed, c);
        pthread_mutex_unlock(&app->changed_lock);
        if (rc == 0) {
            atomic_fetch_add(&app->finished, finished);
            atomic_fetch_add(&app->cancelled, cancelled);
            atomic_fetch_add(&app->refunded, refunded);
        }
    }
    if (rc >= 0) {
        /* Replays, or payment results for orders that are not ours. */
        atomic_fetch_add(&app->ignored_results, (uint64_t)(payments - paid - mismatched));
        atomic_fetch_add(&app->mismatched_results, (uint64_t)mismatched);
    }
    free(changed);
    free(results);
    free(from);
    return rc < 0 ? rc : 0;
}

/* Puts the message of each of due[0..n) NEW orders, or of each of
 * refunds[0..nrefunds) PENDING refunds, into the outbox again. */
static int redrive_messages(db_conn *c, const order *due, int n, const refund *refunds,
                            int nrefunds)
{
    int rc = 0;
    for (int i = 0; rc == 0 && i < n + nrefunds; i++) {
        payment_msg m;
        trace_ctx t, *in = NULL; /* an order's request goes again in its trace */
        if (i < n) {
            order_redrive_message(&due[i], &m);
            in = trace_parse(due[i].traceparent, &t) == 0 ? &t : NULL;
        } else {
            order_refund_request(&refunds[i - n], &m);
        }
        char *payload = msg_encode(&m);
        rc = payload ? outbox_add(c, MSG_TOPIC_REQUESTS, m.user_id, payload, in) : -DB_FAILED;
        free(payload);
    }
    return rc;
}

/* Asks the broker whether payments has read past the last mark, and takes
 * the next one. Returns the time before which every request sent has been
 * read by payments (and answered, by now, unless lost): epoch ms, 0 for
 * none yet. A broker that does not answer moves nothing: while payments
 * or Kafka is away, nothing is sent again, however long the outage. */
static int64_t requests_read_before(orders_app *app)
{
    redrive_gate *g = &app->gate;
    if (g->nmarks > 0) {
        int64_t read[REDRIVE_MAX_PARTITIONS];
        if (kafka_group_offsets(g->rk, MSG_TOPIC_REQUESTS, g->nmarks, read, 2000) < 0)
            return g->read_before;
        int64_t unread = 0;
        for (int p = 0; p < g->nmarks; p++)
            if (read[p] < g->marks[p])
                unread += g->marks[p] - (read[p] > 0 ? read[p] : 0);
        atomic_store(&app->requests_unread, unread);
        if (unread > 0) {
            atomic_fetch_add(&app->redrive_waits, 1);
            int64_t now = clock_now_ms();
            if (now - g->logged_at >= 60000) {
                g->logged_at = now;
                log_msg(LOG_WARN, NULL,
                        "re-drive waits: payments has %" PRId64 " requests to read; nothing "
                        "is sent again until it has",
                        unread);
            }
            return g->read_before;
        }
        g->read_before = g->passed;
        g->passed = g->marked_at;
        g->nmarks = 0;
    }
    int64_t at = clock_wall_ms();
    int n = kafka_end_offsets(g->rk, MSG_TOPIC_REQUESTS, g->marks, REDRIVE_MAX_PARTITIONS, 2000);
    if (n > 0)
        g->nmarks = n, g->marked_at = at;
    return g->read_before;
}

void orders_redrive(void *arg)
{
    orders_app *app = arg;
    order *due = calloc(REDRIVE_BATCH, sizeof *due);
    refund *refunds = calloc(REDRIVE_BATCH, sizeof *refunds);
    db_conn *c = NULL;
    int n = 0, nrefunds = 0;
    int rc = due && refunds ? db_acquire(app->svc.db, 1000, &c) : -DB_FAILED;
    /* The broker is asked only when something is due, and never while a
     * connection is held. */
    if (rc == 0 && (rc = store_redrive_due(c)) == 1) {
        db_release(app->svc.db, c), c = NULL;
        redrive_window w = {.after_ms = app->redrive_after_ms,
                            .max_ms = app->redrive_max_ms,
                            .sent_before_ms = requests_read_before(app)};
        rc = db_acquire(app->svc.db, 1000, &c);
        if (rc == 0)
            rc = db_begin(c);
        if (rc == 0)
            rc = n = store_redrive_claim(c, REDRIVE_BATCH, &w, due);
        if (rc >= 0)
            rc = nrefunds = store_refund_redrive_claim(c, REDRIVE_BATCH, &w, refunds);
        if (rc >= 0)
            rc = redrive_messages(c, due, n, refunds, nrefunds);
        if (rc >= 0)
            rc = db_commit(c);
    }
    if (rc < 0) {
        atomic_fetch_add(&app->redrive_failures, 1);
        log_msg(LOG_WARN, NULL, "re-drive failed (%s, SQLSTATE %s); trying again next tick",
                err_str(rc), c && db_sqlstate(c)[0] ? db_sqlstate(c) : "none");
    }
    db_release(app->svc.db, c);
    if (rc == 0 && n + nrefunds > 0) {
        atomic_fetch_add(&app->redrives, (uint64_t)n);
        atomic_fetch_add(&app->refund_redrives, (uint64_t)nrefunds);
        log_msg(LOG_INFO, NULL, "re-drove %d orders still NEW and %d refunds still PENDING", n,
                nrefunds);
        outbox_relay_wake(app->svc.relay);
    }
    free(due);
    free(refunds);
}

void orders_purge(void *arg)
{
    orders_app *app = arg;
    svc_purge(&app->svc, idem_purge, app->svc.idempotency_retention_s, "idempotency keys",
              &app->purge_failures);
}

void orders_metrics(void *arg, FILE *out)
{
    orders_app *app = arg;
    outbox_relay_metrics(app->svc.relay, out);
    svc_metrics(&app->svc, &app->create, 1, out);
    consumer_metrics(app->svc.consumer, out);
    ws_metrics(app->hub, out);
    metrics_header(out, "orders_final_total", "counter",
                   "Orders that reached a status: out of NEW, or all their money back (REFUNDED)");
    metrics_sample(out, "orders_final_total", "status=\"FINISHED\"", atomic_load(&app->finished));
    metrics_sample(out, "orders_final_total", "status=\"CANCELLED\"", atomic_load(&app->cancelled));
    metrics_sample(out, "orders_final_total", "status=\"REFUNDED\"", atomic_load(&app->refunded));
    metrics_series(out, "orders_redrives_total", "counter",
                   "Payment requests published again for orders still NEW",
                   atomic_load(&app->redrives));
    metrics_series(out, "refunds_redrives_total", "counter",
                   "Refund requests published again for refunds still PENDING",
                   atomic_load(&app->refund_redrives));
    metrics_series(out, "orders_redrive_waits_total", "counter",
                   "Re-drive checks that found payments behind on payment.requests: nothing "
                   "due was sent again",
                   atomic_load(&app->redrive_waits));
    metrics_header(out, "orders_requests_unread", "gauge",
                   "Requests payments had not read when the re-drive last asked the broker");
    fprintf(out, "orders_requests_unread %" PRId64 "\n", atomic_load(&app->requests_unread));
    metrics_header(out, "worker_failures_total", "counter",
                   "Rounds of a background worker that failed (each is logged)");
    metrics_sample(out, "worker_failures_total", "worker=\"redrive\"",
                   atomic_load(&app->redrive_failures));
    metrics_sample(out, "worker_failures_total", "worker=\"purge\"",
                   atomic_load(&app->purge_failures));
    metrics_series(out, "orders_results_mismatched_total", "counter",
                   "Payment results naming another user or amount than their order's"
                   " (dead-lettered, each logged)",
                   atomic_load(&app->mismatched_results));
    metrics_series(out, "orders_results_ignored_total", "counter",
                   "Payment results for orders already final or unknown (replays)",
                   atomic_load(&app->ignored_results));
}
