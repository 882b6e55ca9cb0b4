#include "lib/consumer.h"
#include "lib/kafka.h"
#include "lib/log.h"
#include "lib/metrics.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const db_stmt consumer_stmts[] = {
    {"dead_letter_add",
     "INSERT INTO dead_letters (topic, partition, \"offset\", key, payload, reason)"
     " VALUES ($1, $2, $3, $4, $5, $6)"},
    {NULL, NULL},
};

struct consumer {
    db_pool *pool;
    consumer_config cfg;
    rd_kafka_t *rk;
    pthread_t thread;
    atomic_bool stopping;
    _Atomic uint64_t batches, messages, dead_letters, retries;
};

static int dead_letter(db_conn *c, const rd_kafka_message_t *m, const char *why)
{
    char partition[16], offset[24];
    snprintf(partition, sizeof partition, "%" PRId32, m->partition);
    snprintf(offset, sizeof offset, "%" PRId64, m->offset);
    const char *params[] = {
        rd_kafka_topic_name(m->rkt), partition, offset, m->key, m->payload, why};
    int lengths[] = {0, 0, 0, (int)m->key_len, (int)m->len, 0};
    int formats[] = {0, 0, 0, 1, 1, 0};
    log_msg(LOG_WARN, NULL, "dead letter %s[%" PRId32 "]@%" PRId64 ": %s",
            rd_kafka_topic_name(m->rkt), m->partition, m->offset, why);
    return db_exec_bin(c, "dead_letter_add", 6, params, lengths, formats, NULL);
}

/* Handles msgs[0..n) in one transaction. Returns 0 or -DB_*; on failure
 * `sqlstate` holds the database's error code ("" when it gave none). */
static int run_batch(consumer *cs, rd_kafka_message_t **msgs, int n, int *dead, char *sqlstate)
{
    db_conn *c = NULL;
    consumer_verdict *verdicts = calloc((size_t)n, sizeof *verdicts);
    int rc = verdicts ? db_acquire(cs->pool, 1000, &c) : -DB_FAILED;
    if (rc == 0)
        rc = db_begin(c);
    *dead = 0;
    if (rc == 0)
        rc = cs->cfg.handle(c, msgs, n, cs->cfg.app, verdicts);
    for (int i = 0; rc == 0 && i < n; i++) {
        if (verdicts[i].poison) {
            rc = dead_letter(c, msgs[i], verdicts[i].why);
            (*dead)++;
        }
    }
    if (rc == 0)
        rc = db_commit(c);
    snprintf(sqlstate, 6, "%s", rc < 0 && c ? db_sqlstate(c) : "");
    db_release(cs->pool, c);
    free(verdicts);
    return rc;
}

/* Waits *backoff_ms (doubling it, up to 2 s) unless stopping; returns
 * false when stopping. */
static bool back_off(consumer *cs, int *backoff_ms)
{
    for (int waited = 0; waited < *backoff_ms; waited += 50) {
        if (atomic_load(&cs->stopping))
            return false;
        struct timespec t = {.tv_nsec = 50 * 1000000};
        nanosleep(&t, NULL);
    }
    *backoff_ms = *backoff_ms < 2000 ? *backoff_ms * 2 : 2000;
    return !atomic_load(&cs->stopping);
}

static bool transient(int rc)
{
    return rc == -DB_UNAVAILABLE || rc == -DB_CONFLICT;
}

/* Dead-letters one message in a transaction of its own. */
static int dead_letter_alone(consumer *cs, const rd_kafka_message_t *m, const char *sqlstate)
{
    char why[128];
    snprintf(why, sizeof why, "handling failed by itself: database error SQLSTATE %s",
             sqlstate[0] ? sqlstate : "unknown");
    db_conn *c = NULL;
    int rc = db_acquire(cs->pool, 1000, &c);
    if (rc == 0)
        rc = dead_letter(c, m, why);
    db_release(cs->pool, c);
    return rc;
}

/* Runs `n` messages until they are durable: as a batch, or one by one when
 * the batch fails for a reason that retrying will not cure, dead-lettering
 * the message that fails alone. Transient failures are waited out. Returns
 * false when the consumer is stopping first (nothing may be acknowledged). */
static bool process(consumer *cs, rd_kafka_message_t **msgs, int n)
{
    int dead = 0, rc, backoff = 100;
    char sqlstate[6];
    while (transient(rc = run_batch(cs, msgs, n, &dead, sqlstate))) {
        atomic_fetch_add(&cs->retries, 1);
        if (!back_off(cs, &backoff))
            return false;
    }
    if (rc != 0) {
        /* The batch rolled back: find the message that fails alone. */
        dead = 0;
        for (int i = 0; i < n; i++) {
            int one_dead = 0, one;
            backoff = 100;
            while ((one = run_batch(cs, &msgs[i], 1, &one_dead, sqlstate)) != 0) {
                if (!transient(one) && dead_letter_alone(cs, msgs[i], sqlstate) == 0) {
                    one_dead = 1;
                    break;
                }
                if (!back_off(cs, &backoff))
                    return false;
            }
            dead += one_dead;
        }
    }
    atomic_fetch_add(&cs->batches, 1);
    atomic_fetch_add(&cs->messages, (uint64_t)n);
    atomic_fetch_add(&cs->dead_letters, (uint64_t)dead);
    return true;
}

/* Acknowledges everything up to each partition's last message. */
static void commit_offsets(consumer *cs, rd_kafka_message_t **msgs, int n)
{
    rd_kafka_topic_partition_list_t *offsets = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++) {
        const char *topic = rd_kafka_topic_name(msgs[i]->rkt);
        rd_kafka_topic_partition_t *p =
            rd_kafka_topic_partition_list_find(offsets, topic, msgs[i]->partition);
        if (!p)
            p = rd_kafka_topic_partition_list_add(offsets, topic, msgs[i]->partition);
        if (msgs[i]->offset + 1 > p->offset)
            p->offset = msgs[i]->offset + 1;
    }
    /* Asynchronous: a lost commit only means a redelivery, which the
     * handlers absorb. */
    rd_kafka_resp_err_t e = rd_kafka_commit(cs->rk, offsets, 1);
    if (e)
        log_msg(LOG_WARN, NULL, "offset commit: %s", rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(offsets);
}

static void *consumer_main(void *arg)
{
    consumer *cs = arg;
    rd_kafka_message_t **msgs = calloc((size_t)cs->cfg.batch, sizeof *msgs);
    int last_n = 0;
    while (msgs && !atomic_load(&cs->stopping)) {
        int n = 0;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(cs->rk, 200);
        /* A batch takes what arrives within gather_ms of its first message:
         * fewer, larger transactions, each one commit. It waits only when
         * the last batch had company: a lone message (light load, where
         * commits are plentiful) goes at once. */
        int gather_ms = last_n > 1 ? cs->cfg.gather_ms : 0;
        struct timespec first;
        clock_gettime(CLOCK_MONOTONIC, &first);
        while (m) {
            if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    log_msg(LOG_WARN, NULL, "consumer %s: %s", cs->cfg.group,
                            rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
            } else {
                msgs[n++] = m;
            }
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long left = gather_ms - ((now.tv_sec - first.tv_sec) * 1000 +
                                     (now.tv_nsec - first.tv_nsec) / 1000000);
            m = n < cs->cfg.batch ? rd_kafka_consumer_poll(cs->rk, left > 0 ? (int)left : 0) : NULL;
        }
        if (n == 0)
            continue;
        last_n = n;
        bool done = process(cs, msgs, n);
        if (done) {
            commit_offsets(cs, msgs, n);
            if (cs->cfg.after_commit)
                cs->cfg.after_commit(cs->cfg.app);
        }
        for (int i = 0; i < n; i++)
            rd_kafka_message_destroy(msgs[i]);
    }
    free(msgs);
    return NULL;
}

consumer *consumer_start(db_pool *pool, const consumer_config *cfg)
{
    consumer *cs = calloc(1, sizeof *cs);
    if (!cs)
        return NULL;
    cs->pool = pool;
    cs->cfg = *cfg;
    const char *topics[] = {cfg->topic, NULL};
    cs->rk = kafka_consumer_new(cfg->brokers, cfg->group, cfg->client_id, topics);
    if (!cs->rk || pthread_create(&cs->thread, NULL, consumer_main, cs) != 0) {
        kafka_destroy(cs->rk);
        free(cs);
        return NULL;
    }
    return cs;
}

void consumer_stop(consumer *cs)
{
    if (!cs)
        return;
    atomic_store(&cs->stopping, true);
    pthread_join(cs->thread, NULL);
    kafka_destroy(cs->rk);
    free(cs);
}

static int64_t lag(consumer *cs)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    int64_t total = 0;
    if (rd_kafka_assignment(cs->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    rd_kafka_position(cs->rk, parts);
    for (int i = 0; i < parts->cnt; i++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_topic_partition_t *p = &parts->elems[i];
        if (rd_kafka_get_watermark_offsets(cs->rk, p->topic, p->partition, &lo, &hi) != 0 || hi < 0)
            continue;
        int64_t pos = p->offset >= 0 ? p->offset : lo;
        if (hi > pos)
            total += hi - pos;
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return total;
}

void consumer_metrics(consumer *cs, FILE *out)
{
    const char *t = cs->cfg.topic;
    metrics_header(out, "consumer_batches_total", "counter",
                   "Batches handled, one transaction each");
    fprintf(out, "consumer_batches_total{topic=\"%s\"} %" PRIu64 "\n", t,
            atomic_load(&cs->batches));
    metrics_header(out, "consumer_messages_total", "counter", "Messages handled");
    fprintf(out, "consumer_messages_total{topic=\"%s\"} %" PRIu64 "\n", t,
            atomic_load(&cs->messages));
    metrics_header(out, "consumer_retries_total", "counter",
                   "Batches retried after a transient failure");
    fprintf(out, "consumer_retries_total{topic=\"%s\"} %" PRIu64 "\n", t,
            atomic_load(&cs->retries));
    metrics_header(out, "dead_letters_total", "counter", "Messages set aside in dead_letters");
    fprintf(out, "dead_letters_total{topic=\"%s\"} %" PRIu64 "\n", t,
            atomic_load(&cs->dead_letters));
    metrics_header(out, "consumer_lag", "gauge", "Messages behind the partitions' ends");
    fprintf(out, "consumer_lag{topic=\"%s\"} %" PRId64 "\n", t, lag(cs));
}
