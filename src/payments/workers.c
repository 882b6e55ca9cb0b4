/* The payments service's message side: the payment.requests handler, the
 * purge, and their metrics. */
#include "lib/idem.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/msg.h"
#include "payments/app.h"
#include "payments/store.h"

#include <inttypes.h>
#include <stdlib.h>

/* Decides msgs[0..n) of one kind (requests, cancels or refunds) with one
 * statement, into results[] and flags[] (a request's or a refund's: a
 * replay, a result published before, published again; a cancel's: whether
 * money went back). */
static int decide(db_conn *c, msg_type kind, const payment_msg *msgs, int n, payment_msg *results,
                  bool *flags)
{
    switch (kind) {
    case MSG_PAYMENT_CANCEL:
        return store_cancel_batch(c, msgs, n, results, flags);
    case MSG_REFUND_REQUESTED:
        return store_refund_batch(c, msgs, n, results, flags);
    default:
        return store_payment_batch(c, msgs, n, results, flags);
    }
}

/* The SQL that decides a kind, for its spans' db.operation.name. */
static const char *decided_by(msg_type kind)
{
    return kind == MSG_PAYMENT_CANCEL     ? "SELECT payment_cancel_batch"
           : kind == MSG_REFUND_REQUESTED ? "SELECT payment_refund_batch"
                                          : "SELECT payment_batch";
}

/* Decides a run of one kind, in a "payments decide" span per message
 * (spans[k]: the message of reqs[k]'s; NULL: none traced), tagged with
 * its outcome. */
static int decide_traced(payments_app *app, db_conn *c, const payment_msg *reqs, int n,
                         payment_msg *results, bool *flags, consumer_span *const *spans)
{
    trace_span *decided = spans ? calloc((size_t)n, sizeof *decided) : NULL;
    for (int k = 0; decided && k < n; k++) {
        trace_begin(app->svc.traces, &decided[k], &spans[k]->transaction.ctx, "payments decide",
                    TRACE_INTERNAL);
        trace_tag(&decided[k], "db.system", "postgresql");
        trace_tag(&decided[k], "db.operation.name", decided_by(reqs[0].type));
        trace_tag(&decided[k], "shop.order_id", reqs[k].order_id);
        trace_tag_int(&decided[k], "shop.batch.size", n);
    }
    int rc = decide(c, reqs[0].type, reqs, n, results, flags);
    for (int k = 0; decided && k < n; k++) {
        if (rc < 0)
            trace_tag(&decided[k], "error", err_str(rc));
        else {
            trace_tag(&decided[k], "shop.outcome", msg_type_name(results[k].type));
            trace_tag(&decided[k],
                      reqs[k].type == MSG_PAYMENT_CANCEL ? "shop.credited" : "shop.replayed",
                      flags[k] ? "true" : "false");
        }
        trace_end(app->svc.traces, &decided[k]);
    }
    free(decided);
    return rc;
}

static bool belongs_on_requests(msg_type t)
{
    return t == MSG_PAYMENT_REQUESTED || t == MSG_PAYMENT_CANCEL || t == MSG_REFUND_REQUESTED;
}

int payments_handle_requests(db_conn *c, rd_kafka_message_t *const *msgs, int n, void *arg,
                             consumer_verdict *verdicts, consumer_span *spans)
{
    payments_app *app = arg;
    payment_msg *reqs = calloc((size_t)n, sizeof *reqs),
                *results = calloc((size_t)n, sizeof *results);
    bool *flags = calloc((size_t)n, sizeof *flags);
    char **payloads = calloc((size_t)n, sizeof *payloads);
    const char **keys = calloc((size_t)n, sizeof *keys);
    /* Each valid request's spans, and the context its result goes on in. */
    consumer_span **span_of = spans ? calloc((size_t)n, sizeof *span_of) : NULL;
    trace_ctx *traces = spans ? calloc((size_t)n, sizeof *traces) : NULL;
    int valid = 0, rc = -DB_FAILED;
    if (!reqs || !results || !flags || !payloads || !keys || (spans && (!span_of || !traces)))
        goto done;
    for (int i = 0; i < n; i++) {
        consumer_verdict *v = &verdicts[i];
        if (msg_decode(msgs[i]->payload, msgs[i]->len, &reqs[valid], v->why, sizeof v->why) < 0)
            v->poison = true;
        else if (!belongs_on_requests(reqs[valid].type)) {
            snprintf(v->why, sizeof v->why, "%s does not belong on %s",
                     msg_type_name(reqs[valid].type), MSG_TOPIC_REQUESTS);
            v->poison = true;
        } else {
            if (spans) {
                consumer_tag(&spans[i], "shop.order_id", reqs[valid].order_id);
                consumer_tag(&spans[i], "shop.message.type", msg_type_name(reqs[valid].type));
                span_of[valid] = &spans[i];
                traces[valid] = spans[i].transaction.ctx;
            }
            valid++;
        }
    }
    /* In message order: each run of requests, of cancels or of refunds
     * with one statement (a cancel or a refund after its order's request,
     * as the key keeps them). */
    rc = 0;
    for (int from = 0, to; from < valid; from = to) {
        for (to = from + 1; to < valid && reqs[to].type == reqs[from].type; to++)
            ;
        if ((rc = decide_traced(app, c, &reqs[from], to - from, &results[from], &flags[from],
                                span_of ? &span_of[from] : NULL)) < 0)
            goto done;
    }
    /* Published again for a replay: the first result may have been lost. */
    uint64_t completed = 0, failed = 0, again = 0, cancelled = 0, credited = 0;
    uint64_t refunded = 0, refused = 0, refunds_again = 0;
    for (int i = 0; i < valid; i++) {
        payloads[i] = msg_encode(&results[i]);
        keys[i] = results[i].order_id;
        if (!payloads[i]) {
            rc = -DB_FAILED;
            goto done;
        }
        if (reqs[i].type == MSG_PAYMENT_CANCEL) {
            cancelled++;
            credited += flags[i];
            continue;
        }
        if (reqs[i].type == MSG_REFUND_REQUESTED) {
            refunds_again += flags[i];
            refunded += !flags[i] && results[i].type == MSG_REFUND_COMPLETED;
            refused += !flags[i] && results[i].type == MSG_REFUND_FAILED;
            continue;
        }
        again += flags[i];
        completed += !flags[i] && results[i].type == MSG_PAYMENT_COMPLETED;
        failed += !flags[i] && results[i].type == MSG_PAYMENT_FAILED;
    }
    rc = outbox_add_many(c, MSG_TOPIC_RESULTS, keys, (const char *const *)payloads, traces, valid);
    if (rc == 0) {
        atomic_fetch_add(&app->completed, completed);
        atomic_fetch_add(&app->failed, failed);
        atomic_fetch_add(&app->replayed, again);
        atomic_fetch_add(&app->cancels, cancelled);
        atomic_fetch_add(&app->cancel_credits, credited);
        atomic_fetch_add(&app->refunds_completed, refunded);
        atomic_fetch_add(&app->refunds_failed, refused);
        atomic_fetch_add(&app->refunds_replayed, refunds_again);
    }
done:
    for (int i = 0; payloads && i < valid; i++)
        free(payloads[i]);
    free(reqs), free(results), free(flags), free(payloads), free(keys), free(span_of), free(traces);
    return rc;
}

void payments_after_commit(void *arg)
{
    payments_app *app = arg;
    outbox_relay_wake(app->svc.relay);
}

void payments_purge(void *arg)
{
    payments_app *app = arg;
    /* Only what is transient: expired Idempotency-Keys. The inbox is never
     * purged: it records each order's decided outcome for ever, so that a
     * request replayed at any age (a consumer group whose offsets expired
     * re-reads from the start) gets the same answer and never a debit it
     * was refused. */
    svc_purge(&app->svc, idem_purge, app->svc.idempotency_retention_s, "idempotency keys",
              &app->purge_failures);
}

void payments_metrics(void *arg, FILE *out)
{
    payments_app *app = arg;
    outbox_relay_metrics(app->svc.relay, out);
    svc_metrics(&app->svc, NULL, 0, out);
    consumer_metrics(app->svc.consumer, out);
    metrics_header(out, "payments_total", "counter",
                   "Payment requests decided, by outcome (replayed: a duplicate answered again)");
    metrics_sample(out, "payments_total", "outcome=\"completed\"", atomic_load(&app->completed));
    metrics_sample(out, "payments_total", "outcome=\"failed\"", atomic_load(&app->failed));
    metrics_sample(out, "payments_total", "outcome=\"replayed\"", atomic_load(&app->replayed));
    metrics_header(out, "payment_cancels_total", "counter",
                   "Cancels handled, by whether money went back (credited) or none had been taken");
    uint64_t cancels = atomic_load(&app->cancels), credits = atomic_load(&app->cancel_credits);
    metrics_sample(out, "payment_cancels_total", "credited=\"true\"", credits);
    metrics_sample(out, "payment_cancels_total", "credited=\"false\"", cancels - credits);
    metrics_header(out, "payment_refunds_total", "counter",
                   "Refunds decided, by outcome (replayed: a duplicate answered again)");
    metrics_sample(out, "payment_refunds_total", "outcome=\"completed\"",
                   atomic_load(&app->refunds_completed));
    metrics_sample(out, "payment_refunds_total", "outcome=\"failed\"",
                   atomic_load(&app->refunds_failed));
    metrics_sample(out, "payment_refunds_total", "outcome=\"replayed\"",
                   atomic_load(&app->refunds_replayed));
    metrics_header(out, "worker_failures_total", "counter",
                   "Rounds of a background worker that failed (each is logged)");
    metrics_sample(out, "worker_failures_total", "worker=\"purge\"",
                   atomic_load(&app->purge_failures));
}
