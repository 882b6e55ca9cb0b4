#include "lib/outbox.h"
#include "lib/clock.h"
#include "lib/kafka.h"
#include "lib/log.h"
#include "lib/metrics.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const db_stmt outbox_stmts[] = {
    {"outbox_add", "INSERT INTO outbox (topic, key, payload) VALUES ($1, $2, $3)"},
    {"outbox_add_many", "INSERT INTO outbox (topic, key, payload)"
                        " SELECT $1, k, p FROM unnest($2::text[], $3::text[])"
                        " WITH ORDINALITY AS m(k, p, n) ORDER BY n"},
    {"outbox_claim", "SELECT id, topic, key, payload FROM outbox ORDER BY id LIMIT $1"
                     " FOR UPDATE SKIP LOCKED"},
    {"outbox_delete", "DELETE FROM outbox WHERE id = ANY($1::bigint[])"},
    {"outbox_backlog", "SELECT count(*) FROM outbox"},
    {NULL, NULL},
};

struct outbox_relay {
    db_pool *pool;
    outbox_relay_config cfg;
    /* Replaced by the relay thread when it fails for good; readers on
     * other threads (the readiness check) take producer_lock to read it. */
    rd_kafka_t *producer;
    pthread_rwlock_t producer_lock;
    int message_timeout_ms;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool woken, stopping;
    /* The relay thread's alone: delivery reports still to come this round,
     * and how many said "not delivered" (the first one's reason). */
    int awaiting, undelivered;
    rd_kafka_resp_err_t first_failure;
    _Atomic uint64_t published, failures, batches, backlog, renewals;
};

int outbox_add(db_conn *c, const char *topic, const char *key, const char *payload)
{
    const char *params[] = {topic, key, payload};
    return db_exec(c, "outbox_add", 3, params, NULL);
}

int outbox_add_many(db_conn *c, const char *topic, const char *const *keys,
                    const char *const *payloads, int n)
{
    db_array k, p;
    db_array_begin(&k), db_array_begin(&p);
    for (int i = 0; i < n; i++) {
        db_array_add(&k, keys[i]);
        db_array_add(&p, payloads[i]);
    }
    db_array_end(&k), db_array_end(&p);
    const char *params[] = {topic, k.text, p.text};
    int rc = n ? db_exec(c, "outbox_add_many", 3, params, NULL) : 0;
    db_array_free(&k), db_array_free(&p);
    return rc;
}

/* Delivery outcome of one row: 0 waiting, 1 acknowledged, -1 failed. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    outbox_relay *r = opaque;
    r->awaiting--;
    int *state = m->_private;
    *state = m->err ? -1 : 1;
    if (m->err && !r->undelivered++)
        r->first_failure = m->err;
}

/* Replaces the producer: called with no delivery report outstanding. */
static bool producer_renew(outbox_relay *r)
{
    rd_kafka_t *fresh = kafka_producer_new(r->cfg.brokers, r->cfg.client_id, on_delivery, r);
    if (!fresh)
        return false;
    pthread_rwlock_wrlock(&r->producer_lock);
    rd_kafka_t *old = r->producer;
    r->producer = fresh;
    pthread_rwlock_unlock(&r->producer_lock);
    kafka_destroy(old);
    return true;
}

/* Serves delivery reports until every one of this round's has come. Each
 * comes within message.timeout.ms, delivered or not; past a little more than
 * that, what is still out is purged, and its report (which points into the
 * round's state array) is still awaited: librdkafka must never write into
 * memory the relay has freed. */
static void await_reports(outbox_relay *r)
{
    int64_t deadline = clock_now_ms() + r->message_timeout_ms + 5000;
    /* rd_kafka_poll returns as soon as a report is there; rd_kafka_flush
     * would look only every 10 ms, and that is the whole cost of a hop. */
    while (r->awaiting > 0 && clock_now_ms() < deadline)
        rd_kafka_poll(r->producer, 100);
    if (r->awaiting == 0)
        return;
    log_msg(LOG_WARN, NULL, "outbox: %d delivery report(s) overdue; purging those messages",
            r->awaiting);
    rd_kafka_purge(r->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    for (int64_t next_log = clock_now_ms() + 10000; r->awaiting > 0;) {
        rd_kafka_poll(r->producer, 100);
        if (r->awaiting > 0 && clock_now_ms() > next_log) {
            log_msg(LOG_WARN, NULL, "outbox: still waiting for %d purged report(s)", r->awaiting);
            next_log = clock_now_ms() + 10000;
        }
    }
}

/* One claim-produce-delete round. Returns the number of rows delivered,
 * or -1 when something failed and the relay should back off. */
/* librdkafka 2.0.2's idempotent producer can fail for good after a broker
 * is lost ("sequence desynchronization"; fixed in 2.3.0): every message
 * then fails, so it is replaced, never left dead. Called between rounds,
 * when no delivery report is outstanding. */
static void replace_failed_producer(outbox_relay *r)
{
    char why[256];
    if (!rd_kafka_fatal_error(r->producer, why, sizeof why))
        return;
    log_msg(LOG_ERROR, NULL, "outbox producer failed for good (%s); making a new one", why);
    if (producer_renew(r))
        atomic_fetch_add(&r->renewals, 1);
    else
        log_msg(LOG_ERROR, NULL, "outbox: no new producer; trying again next round");
}

static int relay_once(outbox_relay *r)
{
    db_conn *c = NULL;
    PGresult *rows = NULL;
    int *state = NULL;
    char *ids = NULL;
    int delivered = 0, refused = 0, rc;
    rd_kafka_resp_err_t first_refusal = RD_KAFKA_RESP_ERR_NO_ERROR;
    char limit[16];
    snprintf(limit, sizeof limit, "%d", r->cfg.batch);
    const char *lp[] = {limit};

    /* The delete need not wait for the disk: lost in a crash, it only
     * sends the rows again, which the consumers' dedup absorbs. One fewer
     * WAL flush per round, for the orders' commits to share. */
    if ((rc = db_acquire(r->pool, 1000, &c)) < 0 || (rc = db_begin_unsynced(c)) < 0 ||
        (rc = db_exec(c, "outbox_claim", 1, lp, &rows)) < 0)
        goto done;
    int n = PQntuples(rows);
    if (n == 0) {
        rc = db_commit(c);
        goto done;
    }
    if (!(state = calloc((size_t)n, sizeof *state))) {
        rc = -1;
        goto done;
    }
    r->awaiting = r->undelivered = 0;
    for (int i = 0; i < n; i++) {
        const char *key = PQgetvalue(rows, i, 2), *payload = PQgetvalue(rows, i, 3);
        rd_kafka_resp_err_t e = rd_kafka_producev(
            r->producer, RD_KAFKA_V_TOPIC(PQgetvalue(rows, i, 1)), RD_KAFKA_V_KEY(key, strlen(key)),
            RD_KAFKA_V_VALUE((void *)payload, strlen(payload)),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(&state[i]), RD_KAFKA_V_END);
        if (e) {
            state[i] = -1;
            if (!refused++)
                first_refusal = e;
        } else {
            r->awaiting++;
        }
    }
    if (refused)
        log_msg(LOG_WARN, NULL, "outbox: %d of %d row(s) refused by the producer (%s); they stay",
                refused, n, rd_kafka_err2str(first_refusal));
    await_reports(r);
    if (r->undelivered)
        log_msg(LOG_WARN, NULL, "outbox: %d of %d message(s) not delivered (%s); they go again",
                r->undelivered, n, rd_kafka_err2str(r->first_failure));
    /* A row is deleted only when its own report said delivered: a failed,
     * purged or unknown outcome leaves it to be sent again. */

    size_t len = 0;
    FILE *out = open_memstream(&ids, &len);
    fputc('{', out);
    for (int i = 0; i < n; i++) {
        if (state[i] != 1)
            continue;
        fprintf(out, "%s%s", delivered ? "," : "", PQgetvalue(rows, i, 0));
        delivered++;
    }
    fputc('}', out);
    fclose(out);
    const char *dp[] = {ids};
    if (delivered && (rc = db_exec(c, "outbox_delete", 1, dp, NULL)) < 0)
        goto done;
    rc = db_commit(c);
    atomic_fetch_add(&r->batches, 1);
    atomic_fetch_add(&r->published, (uint64_t)delivered);
    atomic_fetch_add(&r->failures, (uint64_t)(n - delivered));
    if (delivered < n)
        rc = -1;

done:
    /* A failed delete or commit leaves the rows: they go again (a duplicate
     * the consumers' dedup absorbs), never lost. */
    db_release(r->pool, c);
    PQclear(rows);
    free(state);
    free(ids);
    return rc < 0 ? -1 : delivered;
}

static void *relay_main(void *arg)
{
    outbox_relay *r = arg;
    for (;;) {
        replace_failed_producer(r);
        int n = relay_once(r);
        /* Back off after a failure; go again at once after a full batch
         * (more rows may wait); else sleep until woken or the poll. */
        int wait_ms = n < 0 ? 500 : n == r->cfg.batch ? 0 : r->cfg.poll_ms;
        if (n > 0 && n < r->cfg.batch && r->cfg.gather_ms > 0) {
            struct timespec g = {.tv_nsec = (long)r->cfg.gather_ms * 1000000};
            nanosleep(&g, NULL);
            wait_ms = 0;
        }
        struct timespec until = clock_deadline(wait_ms);
        pthread_mutex_lock(&r->lock);
        while (wait_ms > 0 && !r->stopping && !(n >= 0 && r->woken) &&
               pthread_cond_timedwait(&r->wake, &r->lock, &until) == 0)
            ;
        r->woken = false;
        bool stop = r->stopping;
        pthread_mutex_unlock(&r->lock);
        if (stop)
            break;
    }
    return NULL;
}

outbox_relay *outbox_relay_start(db_pool *pool, const outbox_relay_config *cfg)
{
    outbox_relay *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->pool = pool;
    r->cfg = *cfg;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->wake, NULL);
    pthread_rwlock_init(&r->producer_lock, NULL);
    r->message_timeout_ms = kafka_message_timeout_ms();
    if (!producer_renew(r) || pthread_create(&r->thread, NULL, relay_main, r) != 0) {
        kafka_destroy(r->producer);
        pthread_rwlock_destroy(&r->producer_lock);
        pthread_mutex_destroy(&r->lock);
        pthread_cond_destroy(&r->wake);
        free(r);
        return NULL;
    }
    return r;
}

void outbox_relay_wake(outbox_relay *r)
{
    pthread_mutex_lock(&r->lock);
    r->woken = true;
    pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->lock);
}

void outbox_relay_stop(outbox_relay *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    r->stopping = true;
    pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->lock);
    pthread_join(r->thread, NULL);
    kafka_destroy(r->producer);
    pthread_rwlock_destroy(&r->producer_lock);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->wake);
    free(r);
}

void outbox_relay_fail_producer(outbox_relay *r)
{
    pthread_rwlock_rdlock(&r->producer_lock);
    rd_kafka_test_fatal_error(r->producer, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                              "made to fail by a test");
    pthread_rwlock_unlock(&r->producer_lock);
    outbox_relay_wake(r);
}

bool outbox_relay_broker_ok(outbox_relay *r, int timeout_ms)
{
    pthread_rwlock_rdlock(&r->producer_lock);
    bool ok = kafka_reachable(r->producer, timeout_ms);
    pthread_rwlock_unlock(&r->producer_lock);
    return ok;
}

void outbox_relay_metrics(outbox_relay *r, FILE *out)
{
    db_conn *c = NULL;
    PGresult *res = NULL;
    if (db_acquire(r->pool, 200, &c) == 0 && db_exec(c, "outbox_backlog", 0, NULL, &res) == 0)
        atomic_store(&r->backlog, strtoull(PQgetvalue(res, 0, 0), NULL, 10));
    PQclear(res);
    db_release(r->pool, c);
    metrics_header(out, "outbox_backlog", "gauge",
                   "Outbox rows not yet acknowledged by the broker");
    fprintf(out, "outbox_backlog %" PRIu64 "\n", atomic_load(&r->backlog));
    metrics_header(out, "outbox_published_total", "counter", "Outbox rows published and deleted");
    fprintf(out, "outbox_published_total %" PRIu64 "\n", atomic_load(&r->published));
    metrics_header(out, "outbox_publish_failures_total", "counter",
                   "Outbox rows whose delivery failed (they are sent again)");
    fprintf(out, "outbox_publish_failures_total %" PRIu64 "\n", atomic_load(&r->failures));
    metrics_header(out, "outbox_producer_renewals_total", "counter",
                   "Producers replaced after a fatal error");
    fprintf(out, "outbox_producer_renewals_total %" PRIu64 "\n", atomic_load(&r->renewals));
    metrics_header(out, "outbox_relay_batch_size", "summary", "Rows per relay batch");
    fprintf(out, "outbox_relay_batch_size_sum %" PRIu64 "\n",
            atomic_load(&r->published) + atomic_load(&r->failures));
    fprintf(out, "outbox_relay_batch_size_count %" PRIu64 "\n", atomic_load(&r->batches));
}
