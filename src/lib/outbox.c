#include "lib/outbox.h"
#include "lib/clock.h"
#include "lib/kafka.h"
#include "lib/log.h"
#include "lib/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const db_stmt outbox_stmts[] = {
    {"outbox_add", OUTBOX_INSERT " VALUES ($1, $2, $3, nullif($4, ''))"},
    {"outbox_add_many", OUTBOX_INSERT " SELECT $1, k, p, nullif(t, '')"
                                      " FROM unnest($2::text[], $3::text[], $4::text[])"
                                      " WITH ORDINALITY AS m(k, p, t, n) ORDER BY n"},
    {"outbox_claim", "SELECT id, topic, key, payload, coalesce(traceparent, '') FROM outbox"
                     " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"},
    {"outbox_delete", "DELETE FROM outbox WHERE id = ANY($1::bigint[])"},
    {"outbox_backlog", "SELECT count(*) FROM outbox"},
    {NULL, NULL},
};

/* One claimed batch on its way to the broker: the transaction that holds
 * its rows' locks, the rows, and what each row's delivery report said.
 * Up to cfg.rounds (at most ROUNDS_MAX) can be in flight: the next batch is
 * claimed and produced while the
 * broker still acknowledges the previous one, so a row committed meanwhile
 * does not wait for those acknowledgements. One producer sends them all,
 * in claim order: a key's messages keep their order. */
#define ROUNDS_MAX 8

typedef struct round round;

typedef struct row_report {
    round *rd;
    int i; /* its row */
} row_report;

struct round {
    db_conn *conn; /* NULL: the slot is free */
    PGresult *rows;
    row_report *reports;
    int *outcome;      /* each row's: 0 waiting, 1 acknowledged, -1 failed */
    trace_span *spans; /* each row's producer span (NULL: no tracer) */
    int n, awaiting, undelivered;
    rd_kafka_resp_err_t first_failure;
    int64_t overdue_at;
    bool purged;
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
    round rounds[ROUNDS_MAX]; /* the relay thread's alone; cfg.rounds used */
    _Atomic uint64_t published, failures, batches, backlog, renewals, overlapped;
};

void outbox_traceparent(const trace_ctx *ctx, char out[TRACE_PARENT_LEN + 1])
{
    if (ctx && trace_valid(ctx))
        trace_format(ctx, out);
    else
        out[0] = '\0';
}

int outbox_add(db_conn *c, const char *topic, const char *key, const char *payload,
               const trace_ctx *trace)
{
    char tp[TRACE_PARENT_LEN + 1];
    outbox_traceparent(trace, tp);
    const char *params[] = {topic, key, payload, tp};
    return db_exec(c, "outbox_add", 4, params, NULL);
}

int outbox_add_many(db_conn *c, const char *topic, const char *const *keys,
                    const char *const *payloads, const trace_ctx *traces, int n)
{
    db_array k, p, t;
    db_array_begin(&k), db_array_begin(&p), db_array_begin(&t);
    for (int i = 0; i < n; i++) {
        char tp[TRACE_PARENT_LEN + 1];
        outbox_traceparent(traces ? &traces[i] : NULL, tp);
        db_array_add(&k, keys[i]);
        db_array_add(&p, payloads[i]);
        db_array_add(&t, tp);
    }
    db_array_end(&k), db_array_end(&p), db_array_end(&t);
    const char *params[] = {topic, k.text, p.text, t.text};
    int rc = n ? db_exec(c, "outbox_add_many", 4, params, NULL) : 0;
    db_array_free(&k), db_array_free(&p), db_array_free(&t);
    return rc;
}

/* The message's order id, for its span's tags: its payload's "order_id"
 * when it is JSON that has one (lib/msg's messages do). Read only for a
 * span that is recorded. */
static void tag_order_id(trace_span *span, const char *payload)
{
    if (!span->ctx.sampled)
        return;
    json_t *j = json_loads(payload, 0, NULL);
    trace_tag(span, "shop.order_id", json_string_value(json_object_get(j, "order_id")));
    json_decref(j);
}

/* Begins row i's producer span `s`, the child of the context the row was
 * written in (with no tracer: its context only, recorded nowhere). */
static void begin_send_span(outbox_relay *r, round *rd, int i, const trace_ctx *parent,
                            trace_span *s)
{
    const char *topic = PQgetvalue(rd->rows, i, 1);
    char name[96];
    snprintf(name, sizeof name, "send %s", topic);
    trace_begin(r->cfg.traces, s, parent, name, TRACE_PRODUCER);
    trace_tag(s, "messaging.system", "kafka");
    trace_tag(s, "messaging.operation.type", "send");
    trace_tag(s, "messaging.destination.name", topic);
    trace_tag(s, "messaging.kafka.message.key", PQgetvalue(rd->rows, i, 2));
    trace_tag(s, "messaging.client.id", r->cfg.client_id);
    tag_order_id(s, PQgetvalue(rd->rows, i, 3));
}

/* Ends a producer span with what the broker said. */
static void end_send_span(outbox_relay *r, trace_span *s, int32_t partition, int64_t offset,
                          rd_kafka_resp_err_t err)
{
    if (!s->ctx.sampled)
        return;
    if (partition >= 0)
        trace_tag_int(s, "messaging.destination.partition.id", partition);
    if (!err && offset >= 0)
        trace_tag_int(s, "messaging.kafka.offset", offset);
    if (err)
        trace_tag(s, "error", rd_kafka_err2str(err));
    trace_end(r->cfg.traces, s);
}

/* What a row's delivery report said: 0 waiting, 1 acknowledged, -1 failed. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    outbox_relay *r = opaque;
    row_report *rep = m->_private;
    round *rd = rep->rd;
    rd->awaiting--;
    rd->outcome[rep->i] = m->err ? -1 : 1;
    if (m->err && !rd->undelivered++)
        rd->first_failure = m->err;
    if (rd->spans)
        end_send_span(r, &rd->spans[rep->i], m->partition, m->offset, m->err);
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

/* librdkafka 2.0.2's idempotent producer can fail for good after a broker
 * is lost ("sequence desynchronization"; fixed in 2.3.0): every message
 * then fails, so it is replaced, never left dead. Called when no round is
 * in flight, so that no delivery report is outstanding. */
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

/* Lets go of a round: rolls back what was not committed, frees its rows. */
static void end_round(outbox_relay *r, round *rd)
{
    db_release(r->pool, rd->conn);
    PQclear(rd->rows);
    free(rd->reports);
    free(rd->outcome);
    for (int i = 0; rd->spans && i < rd->n; i++)
        json_decref(rd->spans[i].tags); /* a span never sent: its tags only */
    free(rd->spans);
    *rd = (round){0};
}

/* Claims up to a batch of rows into the free slot `rd` and produces them.
 * Returns how many were claimed (0: none waited; the slot stays free), or
 * -1 when the database failed. The rows stay locked by the round's open
 * transaction, so that the next round's claim (SKIP LOCKED) passes them. */
static int start_round(outbox_relay *r, round *rd)
{
    char limit[16];
    snprintf(limit, sizeof limit, "%d", r->cfg.batch);
    const char *lp[] = {limit};
    /* synchronous_commit: the delete need not wait for the disk: lost in a
     * crash, it only sends the rows again, which the consumers' dedup
     * absorbs. One fewer WAL flush per round, for the orders' commits to
     * share.
     * enable_seqscan: the outbox is a queue, and its statistics mislead the
     * planner: a heap grown to a minute of churn between vacuums (9 MB) for
     * a few live rows, so a sequential scan and a sort looked as cheap as
     * the primary key, and payments' claim read all 1,125 pages each round
     * (4.6-8.3 ms, EXPLAIN ANALYZE at 1,000 orders/s). Plans stay per call:
     * a plan kept from an empty outbox was worse still (bench/README.md). */
    if (db_acquire(r->pool, 1000, &rd->conn) < 0 ||
        db_begin_with(rd->conn,
                      "SET LOCAL synchronous_commit = off; SET LOCAL enable_seqscan = off") < 0 ||
        db_exec(rd->conn, "outbox_claim", 1, lp, &rd->rows) < 0) {
        end_round(r, rd);
        return -EIO;
    }
    int n = rd->n = PQntuples(rd->rows);
    if (n == 0) {
        db_commit(rd->conn);
        end_round(r, rd);
        return 0;
    }
    if (!(rd->reports = calloc((size_t)n, sizeof *rd->reports)) ||
        !(rd->outcome = calloc((size_t)n, sizeof *rd->outcome)) ||
        (r->cfg.traces && !(rd->spans = calloc((size_t)n, sizeof *rd->spans)))) {
        end_round(r, rd);
        return -ENOMEM;
    }
    rd->overdue_at = clock_now_ms() + r->message_timeout_ms + 5000;
    int refused = 0;
    rd_kafka_resp_err_t first_refusal = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int i = 0; i < n; i++) {
        const char *key = PQgetvalue(rd->rows, i, 2), *payload = PQgetvalue(rd->rows, i, 3);
        rd->reports[i] = (row_report){.rd = rd, .i = i};
        /* The row's trace goes on in a producer span, whose context the
         * message carries; without a tracer, the context alone. */
        trace_ctx parent;
        trace_span local, *span = rd->spans ? &rd->spans[i] : &local;
        bool traced = trace_parse(PQgetvalue(rd->rows, i, 4), &parent) == 0;
        char tp[TRACE_PARENT_LEN + 1] = "";
        if (traced) {
            begin_send_span(r, rd, i, &parent, span);
            trace_format(&span->ctx, tp);
        }
        /* The headers become the message's when it is taken, and stay
         * ours when it is refused. */
        rd_kafka_headers_t *hdrs = traced ? rd_kafka_headers_new(1) : NULL;
        if (hdrs)
            rd_kafka_header_add(hdrs, TRACE_HEADER, -1, tp, TRACE_PARENT_LEN);
        rd_kafka_resp_err_t e = rd_kafka_producev(
            r->producer, RD_KAFKA_V_TOPIC(PQgetvalue(rd->rows, i, 1)),
            RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE((void *)payload, strlen(payload)),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_OPAQUE(&rd->reports[i]), RD_KAFKA_V_END);
        if (e && hdrs)
            rd_kafka_headers_destroy(hdrs);
        if (e) {
            if (rd->spans)
                end_send_span(r, span, -1, -1, e);
            rd->outcome[i] = -1;
            if (!refused++)
                first_refusal = e;
        } else {
            rd->awaiting++;
        }
    }
    if (refused)
        log_msg(LOG_WARN, NULL, "outbox: %d of %d row(s) refused by the producer (%s); they stay",
                refused, n, rd_kafka_err2str(first_refusal));
    return n;
}

int outbox_acknowledged(const PGresult *rows, const int *outcome, int n, db_array *ids)
{
    db_array_begin(ids);
    for (int i = 0; i < n; i++)
        if (outcome[i] == 1)
            db_array_add(ids, PQgetvalue(rows, i, 0));
    db_array_end(ids);
    return ids->n;
}

/* Every report of the round has come: deletes exactly the rows the broker
 * acknowledged and commits. Returns how many, or -1 when a row failed or
 * the database did (the rows stay, and go again: a duplicate the
 * consumers' dedup absorbs, never a loss). */
static int finish_round(outbox_relay *r, round *rd)
{
    if (rd->undelivered)
        log_msg(LOG_WARN, NULL, "outbox: %d of %d message(s) not delivered (%s); they go again",
                rd->undelivered, rd->n, rd_kafka_err2str(rd->first_failure));
    db_array ids;
    int delivered = outbox_acknowledged(rd->rows, rd->outcome, rd->n, &ids), rc = 0;
    const char *dp[] = {ids.text};
    if (delivered)
        rc = db_exec(rd->conn, "outbox_delete", 1, dp, NULL);
    if (rc == 0)
        rc = db_commit(rd->conn);
    db_array_free(&ids);
    if (rc == 0) {
        atomic_fetch_add(&r->batches, 1);
        atomic_fetch_add(&r->published, (uint64_t)delivered);
        atomic_fetch_add(&r->failures, (uint64_t)(rd->n - delivered));
    }
    int n = rd->n;
    end_round(r, rd);
    return rc < 0 || delivered < n ? -EIO : delivered;
}

/* A round whose reports are overdue (each comes within message.timeout.ms,
 * delivered or not): what is still out is purged, and the purged reports
 * are still awaited, since they point into the round's memory. */
static void purge_if_overdue(outbox_relay *r, round *rd, int64_t now)
{
    if (now < rd->overdue_at)
        return;
    if (!rd->purged) {
        log_msg(LOG_WARN, NULL, "outbox: %d delivery report(s) overdue; purging those messages",
                rd->awaiting);
        rd_kafka_purge(r->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd->purged = true;
    } else {
        log_msg(LOG_WARN, NULL, "outbox: still waiting for %d purged report(s)", rd->awaiting);
    }
    rd->overdue_at = now + 10000;
}

/* The relay: claim a batch, produce it, and while the broker acknowledges
 * it, claim and produce the next one as soon as rows are committed (up to
 * cfg.rounds in flight), then delete each round's acknowledged rows. With
 * nothing in flight it sleeps until woken by a commit, or the fallback
 * poll. After a failure it backs off for 500 ms. */
static void *relay_main(void *arg)
{
    pthread_setname_np(pthread_self(), "relay"); /* for top -H, perf, pidstat -t */
    outbox_relay *r = arg;
    int64_t next_poll = 0, not_before = 0;
    bool more = true; /* rows may wait: the last claim was full, or a commit woke us */
    for (;;) {
        int flying = 0;
        round *free_slot = NULL;
        for (int i = 0; i < r->cfg.rounds; i++) {
            if (r->rounds[i].conn)
                flying++;
            else if (!free_slot)
                free_slot = &r->rounds[i];
        }
        if (!flying)
            replace_failed_producer(r);
        pthread_mutex_lock(&r->lock);
        bool stop = r->stopping;
        more |= r->woken;
        r->woken = false;
        pthread_mutex_unlock(&r->lock);
        int64_t now = clock_now_ms();
        char why[8];
        bool producer_ok = !rd_kafka_fatal_error(r->producer, why, sizeof why);
        if (!producer_ok && !flying)
            not_before = now + 500; /* no new producer could be made: try again */
        if (!stop && free_slot && producer_ok && now >= not_before && (more || now >= next_poll)) {
            int n = start_round(r, free_slot);
            more = n == r->cfg.batch;
            next_poll = now + r->cfg.poll_ms;
            if (n < 0)
                not_before = now + 500;
            else if (n > 0 && !more && r->cfg.gather_ms > 0)
                not_before = now + r->cfg.gather_ms; /* let the next batch grow */
            if (n > 0 && flying++)
                atomic_fetch_add(&r->overlapped, 1);
        }
        if (flying) {
            /* Reports, as soon as one is there; the next commit's wake is
             * seen within a millisecond. */
            rd_kafka_poll(r->producer, 1);
            now = clock_now_ms();
            for (int i = 0; i < r->cfg.rounds; i++) {
                round *rd = &r->rounds[i];
                if (rd->conn && rd->awaiting == 0 && finish_round(r, rd) < 0)
                    not_before = now + 500;
                else if (rd->conn)
                    purge_if_overdue(r, rd, now);
            }
            continue;
        }
        if (stop)
            break;
        /* Nothing in flight: sleep until woken, or the next poll, or the
         * end of a back-off. */
        int64_t until_ms = more ? not_before : next_poll > not_before ? next_poll : not_before;
        struct timespec until = clock_deadline(until_ms > now ? (int)(until_ms - now) : 0);
        pthread_mutex_lock(&r->lock);
        while (!r->stopping && !r->woken && clock_now_ms() < until_ms &&
               pthread_cond_timedwait(&r->wake, &r->lock, &until) == 0)
            ;
        pthread_mutex_unlock(&r->lock);
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
    if (r->cfg.rounds < 1 || r->cfg.rounds > ROUNDS_MAX)
        r->cfg.rounds = r->cfg.rounds < 1 ? 1 : ROUNDS_MAX;
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
    if (!r)
        return;
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

void outbox_relay_refresh(outbox_relay *r)
{
    if (!r)
        return;
    db_conn *c = NULL;
    PGresult *res = NULL;
    /* The last count stays when no open connection is at hand. */
    if (db_acquire_open(r->pool, 200, &c) == 0 && db_exec(c, "outbox_backlog", 0, NULL, &res) == 0)
        atomic_store(&r->backlog, strtoull(PQgetvalue(res, 0, 0), NULL, 10));
    PQclear(res);
    db_release(r->pool, c);
}

void outbox_relay_metrics(outbox_relay *r, FILE *out)
{
    metrics_series(out, "outbox_backlog", "gauge",
                   "Outbox rows not yet acknowledged by the broker (as of the last count, every "
                   "2 s)",
                   atomic_load(&r->backlog));
    metrics_series(out, "outbox_published_total", "counter", "Outbox rows published and deleted",
                   atomic_load(&r->published));
    metrics_series(out, "outbox_publish_failures_total", "counter",
                   "Outbox rows whose delivery failed (they are sent again)",
                   atomic_load(&r->failures));
    metrics_series(out, "outbox_producer_renewals_total", "counter",
                   "Producers replaced after a fatal error", atomic_load(&r->renewals));
    metrics_series(out, "outbox_relay_overlapped_rounds_total", "counter",
                   "Relay rounds claimed and produced while the previous one awaited the broker",
                   atomic_load(&r->overlapped));
    metrics_header(out, "outbox_relay_batch_size", "summary", "Rows per relay batch");
    fprintf(out, "outbox_relay_batch_size_sum %" PRIu64 "\n",
            atomic_load(&r->published) + atomic_load(&r->failures));
    fprintf(out, "outbox_relay_batch_size_count %" PRIu64 "\n", atomic_load(&r->batches));
}

static const cfg_setting outbox_settings_list[] = {
    CFG_I("RELAY_BATCH", outbox_settings, batch, 1, 10000, 256,
          "outbox rows claimed per relay round"),
    CFG_I("RELAY_POLL_MS", outbox_settings, poll_ms, 10, 60000, 500,
          "the relay's fallback poll (it is woken at once after a local commit)"),
    CFG_I("RELAY_GATHER_MS", outbox_settings, gather_ms, 0, 1000, 0,
          "a relay pauses this long after a partial round, to send larger batches"),
    CFG_I("RELAY_ROUNDS", outbox_settings, rounds, 1, 8, 2,
          "batches a relay has in flight at once: the next is claimed and produced while the "
          "broker acknowledges the previous (1: one at a time)"),
};
const cfg_table outbox_settings_table = CFG_TABLE("outbox", outbox_settings_list);
