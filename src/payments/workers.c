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

int payments_handle_request(db_conn *c, const rd_kafka_message_t *m, void *arg, char *why,
                            size_t whylen)
{
    payments_app *app = arg;
    payment_msg req, result;
    bool replayed = false;
    if (msg_decode(m->payload, m->len, &req, why, whylen) < 0)
        return CONSUMER_POISON;
    if (req.type != MSG_PAYMENT_REQUESTED) {
        snprintf(why, whylen, "%s does not belong on %s", msg_type_name(req.type),
                 MSG_TOPIC_REQUESTS);
        return CONSUMER_POISON;
    }
    int rc = store_payment_process(c, &req, &result, &replayed);
    if (rc < 0)
        return rc;
    /* Published again for a replay: the first result may have been lost. */
    char *payload = msg_encode(&result);
    rc = payload ? outbox_add(c, MSG_TOPIC_RESULTS, result.order_id, payload) : -DB_FAILED;
    free(payload);
    if (rc == 0) {
        if (replayed)
            atomic_fetch_add(&app->replayed, 1);
        else if (result.type == MSG_PAYMENT_COMPLETED)
            atomic_fetch_add(&app->completed, 1);
        else
            atomic_fetch_add(&app->failed, 1);
    }
    return rc;
}

void payments_after_commit(void *arg)
{
    payments_app *app = arg;
    outbox_relay_wake(app->relay);
}

void payments_purge(void *arg)
{
    payments_app *app = arg;
    db_conn *c = NULL;
    if (db_acquire(app->db, 1000, &c) < 0)
        return;
    int n, inbox = 0, keys = 0;
    /* Small batches, each its own transaction: no long lock on the table. */
    while ((n = store_inbox_purge(c, app->inbox_retention_s, 1000)) > 0)
        inbox += n;
    while ((n = idem_purge(c, app->idempotency_retention_s, 1000)) > 0)
        keys += n;
    db_release(app->db, c);
    if (inbox || keys)
        log_msg(LOG_INFO, NULL, "purged %d inbox rows and %d idempotency keys", inbox, keys);
}

void payments_metrics(void *arg, FILE *out)
{
    payments_app *app = arg;
    outbox_relay_metrics(app->relay, out);
    consumer_metrics(app->requests, out);
    metrics_header(out, "payments_total", "counter",
                   "Payment requests decided, by outcome (replayed: a duplicate answered again)");
    fprintf(out, "payments_total{outcome=\"completed\"} %" PRIu64 "\n", atomic_load(&app->completed));
    fprintf(out, "payments_total{outcome=\"failed\"} %" PRIu64 "\n", atomic_load(&app->failed));
    fprintf(out, "payments_total{outcome=\"replayed\"} %" PRIu64 "\n", atomic_load(&app->replayed));
}
