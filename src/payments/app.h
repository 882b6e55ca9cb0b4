/* What the payments service's handlers and workers share: borrowed by
 * every request and thread, created and destroyed by main. */
#ifndef PAYMENTS_APP_H
#define PAYMENTS_APP_H

#include "lib/consumer.h"
#include "lib/deadletters.h"
#include "lib/db.h"
#include "lib/http.h"
#include "lib/outbox.h"
#include "lib/svc.h"

#include <stdatomic.h>
#include <stdint.h>

/* The payments service's own settings: only what it names after itself. */
typedef struct payments_settings {
    svc_own own;
} payments_settings;

typedef struct payments_app {
    payments_settings settings;
    svc_parts svc;                                /* pool, relay, the payment.requests consumer */
    _Atomic uint64_t completed, failed, replayed; /* payment outcomes */
    _Atomic uint64_t cancels, cancel_credits;     /* cancels, and those that gave money back */
    _Atomic uint64_t refunds_completed, refunds_failed, refunds_replayed;
    _Atomic uint64_t purge_failures; /* logged, never swallowed */
} payments_app;

/* The routes of the payments API (api/payments.yaml). */
/* The service's own routes; svc_run adds the docs routes after them. */
#define PAYMENTS_NROUTES (4 + DEADLETTER_NROUTES)
extern const http_route payments_routes[]; /* PAYMENTS_NROUTES of them */

/* /readyz and /metrics hooks. */
bool payments_ready(void *app, json_t *checks);
void payments_metrics(void *app, FILE *out);

/* The payment.requests consumer's batch handler (consumer_handle_fn). */
int payments_handle_requests(db_conn *c, rd_kafka_message_t *const *msgs, int n, void *app,
                             consumer_verdict *verdicts, consumer_span *spans);

/* GET /accounts/{user_id}'s batch (svc_def.read): the accounts of
 * items[0..n) in one statement, each answered 200 or 404. */
void payments_read_group(void *app, group_item **items, int n);

/* Wakes the relay after a consumer batch committed. */
void payments_after_commit(void *app);

/* Deletes expired Idempotency-Keys, in batches (a ticker); the inbox is
 * kept for ever. */
void payments_purge(void *app);

#endif
