/* What the orders service's handlers and workers share: borrowed by every
 * request and thread, created and destroyed by main. */
#ifndef ORDERS_APP_H
#define ORDERS_APP_H

#include "lib/consumer.h"
#include "lib/deadletters.h"
#include "lib/group.h"
#include "lib/db.h"
#include "lib/http.h"
#include "lib/outbox.h"
#include "lib/svc.h"
#include "lib/ticker.h"
#include "lib/ws.h"
#include "orders/live.h"
#include "orders/order.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* Payments' consumer group (its svc_def name): whose reading of
 * payment.requests the re-drive waits for. */
#define PAYMENTS_GROUP "payments"
/* The most partitions of payment.requests the re-drive follows. */
#define REDRIVE_MAX_PARTITIONS 256

/* How far payments has read payment.requests, as the re-drive ticker
 * (its only user) last asked the broker: a mark is the topic's end offsets
 * at marked_at; once payments' committed offsets pass a mark, every request
 * sent before it was read. That time becomes usable one check later
 * (read_before), when the answers to what was read have had time to come
 * back: only a request read and left unanswered is worth sending again. */
typedef struct redrive_gate {
    rd_kafka_t *rk; /* orders' principal watching PAYMENTS_GROUP (kafka_observer_new) */
    int nmarks;     /* partitions in marks[]; 0 when none is taken */
    int64_t marks[REDRIVE_MAX_PARTITIONS];
    int64_t marked_at;   /* epoch ms */
    int64_t passed;      /* epoch ms: the last mark payments passed */
    int64_t read_before; /* epoch ms: what may be sent again (0: nothing yet) */
    int64_t logged_at;   /* monotonic ms: the last "waits" log line */
} redrive_gate;

/* The orders service's own settings (orders_settings_table). */
typedef struct orders_settings {
    svc_own own;
    int64_t redrive_after_ms, redrive_max_ms, redrive_check_ms, ws_max_queue, ws_ping_ms, writers,
        group_max, gather_us, create_deadline_ms;
} orders_settings;

typedef struct orders_app {
    orders_settings settings;
    svc_parts svc; /* pool, relay, the payment.results consumer */
    group *create; /* POST /orders' group commit */
    ws_hub *hub;
    live *live;
    ticker *redrive;
    redrive_gate gate;
    live_batch changed;           /* the results handler's, under changed_lock: */
    pthread_mutex_t changed_lock; /* the consumer and an operator's replay */
    int redrive_after_ms, redrive_max_ms, redrive_check_ms;
    int ws_queue, ws_ping_ms;
    int writers, group_max, gather_us;
    int create_deadline_ms; /* POST /orders: answered by then, created or not */
    _Atomic uint64_t finished, cancelled, refunded, ignored_results, redrives, refund_redrives;
    _Atomic uint64_t mismatched_results;               /* dead-lettered: not their order's */
    _Atomic uint64_t redrive_failures, purge_failures; /* logged, never swallowed */
    _Atomic uint64_t redrive_waits;                    /* checks that found payments behind */
    _Atomic int64_t requests_unread;                   /* payments' lag, as last seen */
} orders_app;

/* The service's own routes; svc_run adds the docs routes after them. */
#define ORDERS_NROUTES (7 + DEADLETTER_NROUTES)
extern const http_route orders_routes[]; /* ORDERS_NROUTES of them */

/* An order as the API shows it. Caller owns the result. */

bool orders_ready(void *app, json_t *checks);
void orders_metrics(void *app, FILE *out);

/* The payment.results consumer's batch handler (consumer_handle_fn). */
int orders_handle_results(db_conn *c, rd_kafka_message_t *const *msgs, int n, void *app,
                          consumer_verdict *verdicts, consumer_span *spans);

/* Publishes the payment request of NEW orders whose re-drive is due
 * (a ticker). */
void orders_redrive(void *app);

/* GET /orders/{id}'s batch (svc_def.read): the orders of items[0..n) in
 * one statement, each answered 200 or 404. */
void orders_read_group(void *app, group_item **items, int n);

/* Deletes expired Idempotency-Keys (a ticker). */
void orders_purge(void *app);

#endif
