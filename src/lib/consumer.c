#include "lib/consumer.h"
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
    /* The consumer thread's alone (librdkafka calls the hooks from inside
     * its polls): messages that arrived while the partitions were paused,
     * to go with the next batch. */
    rd_kafka_message_t **held;
    int nheld, held_cap;
    /* Since when the consumer has had no partition (0: it has some), and
     * when to look next whether that is right (see rejoin_if_stranded). */
    int64_t empty_since, next_stranded_check;
    atomic_bool paused;  /* while a transient failure is waited out */
    atomic_int assigned; /* partitions the consumer owns now */
    /* What the last rebalance gave the consumer, kept here because it only
     * changes inside its own polls: rd_kafka_assignment() is a round trip to
     * librdkafka's main thread, and the hot path asks twice per batch. */
    rd_kafka_topic_partition_list_t *owned;
    /* Offsets handled (their transactions committed) and not yet committed
     * to Kafka, and when that was last done: the consumer thread's alone. */
    rd_kafka_topic_partition_list_t *handled;
    int64_t committed_at;
    _Atomic uint64_t batches, messages, dead_letters, retries, isolations, rebalances, revoked,
        commits_ok, commits_failed, rejoins, systemic;
    _Atomic int64_t lag_seen;   /* consumer_refresh's, for /metrics */
    int64_t systemic_logged_at; /* rate limit of its log line */
};

/* `why` is UTF-8 (the column is text): msg_decode, the one reason that
 * quotes a message, repairs what its cut may break. */
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

void consumer_tag(consumer_span *span, const char *key, const char *value)
{
    trace_tag(&span->message, key, value);
    trace_tag(&span->transaction, key, value);
}

/* The context a message carries in its `traceparent` header: true when it
 * has one that reads. */
static bool message_context(rd_kafka_message_t *m, trace_ctx *out)
{
    rd_kafka_headers_t *hdrs = NULL;
    const void *value = NULL;
    size_t size = 0;
    char text[128];
    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(hdrs, TRACE_HEADER, &value, &size) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        !value || size >= sizeof text)
        return false;
    memcpy(text, value, size);
    text[size] = '\0';
    return trace_parse(text, out) == 0;
}

/* Begins each message's "process TOPIC" span. Returns the spans, or NULL
 * when none is traced: no tracer, and no message with a context to pass
 * on (or no memory). Without a tracer nothing is allocated until a
 * message brings a context: the messages before it stay without ids, as
 * trace_begin would leave them. */
static consumer_span *begin_spans(consumer *cs, rd_kafka_message_t **msgs, int n)
{
    consumer_span *spans = NULL;
    char name[96];
    snprintf(name, sizeof name, "process %s", cs->cfg.topic);
    for (int i = 0; i < n; i++) {
        trace_ctx parent;
        bool has = message_context(msgs[i], &parent);
        if (!spans && (has || cs->cfg.traces) && !(spans = calloc((size_t)n, sizeof *spans)))
            return NULL;
        if (!spans)
            continue;
        trace_span *s = &spans[i].message;
        trace_begin(cs->cfg.traces, s, has ? &parent : NULL, name, TRACE_CONSUMER);
        trace_tag(s, "messaging.system", "kafka");
        trace_tag(s, "messaging.operation.type", "process");
        trace_tag(s, "messaging.destination.name", cs->cfg.topic);
        trace_tag(s, "messaging.consumer.group.name", cs->cfg.group);
        trace_tag_int(s, "messaging.destination.partition.id", msgs[i]->partition);
        trace_tag_int(s, "messaging.kafka.offset", msgs[i]->offset);
        trace_tag_int(s, "messaging.batch.message_count", n);
    }
    return spans;
}

/* The batch's own span: a trace of its own, naming its messages' contexts
 * ("links": Zipkin's format has none, so a tag of "trace-span" pairs, the
 * first 32). Recorded when one of its messages is (the sampler decided
 * theirs); else left without ids. */
static void begin_batch_span(consumer *cs, trace_span *batch, const consumer_span *spans, int n)
{
    bool any = false;
    for (int i = 0; spans && i < n && !any; i++)
        any = spans[i].message.ctx.sampled;
    *batch = (trace_span){0};
    if (!any)
        return;
    char name[96];
    snprintf(name, sizeof name, "process %s batch", cs->cfg.topic);
    trace_begin_recorded(cs->cfg.traces, batch, name, TRACE_CONSUMER);
    trace_tag(batch, "messaging.system", "kafka");
    trace_tag(batch, "messaging.operation.type", "process");
    trace_tag(batch, "messaging.destination.name", cs->cfg.topic);
    trace_tag_int(batch, "messaging.batch.message_count", n);
    char links[32 * 50 + 1] = "";
    size_t len = 0;
    for (int i = 0, k = 0; spans && i < n && k < 32; i++) {
        const trace_ctx *c = &spans[i].message.ctx;
        if (!trace_valid(c))
            continue;
        char t[33], id[17];
        trace_hex(c->trace_id, 16, t);
        trace_hex(c->span_id, 8, id);
        len += (size_t)snprintf(links + len, sizeof links - len, "%s%s-%s", k++ ? " " : "", t, id);
    }
    trace_tag(batch, "shop.links", links);
}

/* Ends each message's span: `why` tags it as an error (NULL: handled). */
static void end_spans(consumer *cs, consumer_span *spans, int n, const char *why)
{
    for (int i = 0; spans && i < n; i++) {
        trace_tag(&spans[i].message, "error", why);
        trace_end(cs->cfg.traces, &spans[i].message);
    }
}

/* Handles msgs[0..n) in one transaction (each message's "TOPIC
 * transaction" span one try of it). Returns 0 or -DB_*; on failure
 * `sqlstate` holds the database's error code ("" when it gave none). */
static int run_batch(consumer *cs, rd_kafka_message_t **msgs, consumer_span *spans, int n,
                     int *dead, char *sqlstate)
{
    db_conn *c = NULL;
    char name[96];
    snprintf(name, sizeof name, "%s transaction", cs->cfg.topic);
    for (int i = 0; spans && i < n; i++) {
        trace_span *s = &spans[i].transaction;
        trace_begin(cs->cfg.traces, s, &spans[i].message.ctx, name, TRACE_INTERNAL);
        trace_tag(s, "db.system", "postgresql");
        trace_tag_int(s, "messaging.batch.message_count", n);
    }
    consumer_verdict *verdicts = calloc((size_t)n, sizeof *verdicts);
    int rc = verdicts ? db_acquire(cs->pool, 1000, &c) : -DB_FAILED;
    /* Plans made at each call (PostgreSQL's choice), though orders' status
     * update spends 230 µs a batch planning: a plan kept for the
     * connection is made once, with the statistics of that moment (a new
     * database's empty tables), and the relay's kept plans went wrong that
     * way (bench/README.md). */
    if (rc == 0)
        rc = db_begin(c);
    *dead = 0;
    if (rc == 0)
        rc = cs->cfg.handle(c, msgs, n, cs->cfg.app, verdicts, spans);
    for (int i = 0; rc == 0 && i < n; i++) {
        if (verdicts[i].poison) {
            if (spans) {
                consumer_tag(&spans[i], "error", verdicts[i].why);
                trace_log_context(&spans[i].message.ctx);
            }
            rc = dead_letter(c, msgs[i], verdicts[i].why);
            trace_log_context(NULL);
            (*dead)++;
        }
    }
    if (rc == 0)
        rc = db_commit(c);
    snprintf(sqlstate, 6, "%s", rc < 0 && c ? db_sqlstate(c) : "");
    for (int i = 0; spans && i < n; i++) {
        trace_span *s = &spans[i].transaction;
        if (rc < 0) {
            char why[64];
            snprintf(why, sizeof why, "%s (SQLSTATE %s): tried again", err_str(rc),
                     sqlstate[0] ? sqlstate : "none");
            trace_tag(s, "error", why);
        }
        trace_end(cs->cfg.traces, s);
    }
    db_release(cs->pool, c);
    free(verdicts);
    return rc;
}

/* Keeps a message that arrived while the batch in hand waits: it goes with
 * the next batch (its offset is past the application's position already, so
 * it cannot be dropped). */
static void hold(consumer *cs, rd_kafka_message_t *m)
{
    if (m->err) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            log_msg(LOG_WARN, NULL, "consumer %s: %s", cs->cfg.group, rd_kafka_message_errstr(m));
        rd_kafka_message_destroy(m);
        return;
    }
    if (cs->nheld == cs->held_cap) {
        int cap = cs->held_cap ? cs->held_cap * 2 : 16;
        rd_kafka_message_t **more = realloc(cs->held, (size_t)cap * sizeof *more);
        if (!more) {
            /* Not acknowledged, so not lost: a restart reads it again. */
            log_msg(LOG_ERROR, NULL,
                    "consumer %s: out of memory holding a message; it will be "
                    "read again after a restart",
                    cs->cfg.group);
            rd_kafka_message_destroy(m);
            return;
        }
        cs->held = more;
        cs->held_cap = cap;
    }
    cs->held[cs->nheld++] = m;
}

/* Pauses (or resumes) fetching from every assigned partition. */
static void pause_all(consumer *cs, bool pause)
{
    if (cs->owned) {
        if (pause)
            rd_kafka_pause_partitions(cs->rk, cs->owned);
        else
            rd_kafka_resume_partitions(cs->rk, cs->owned);
    }
    if (atomic_exchange(&cs->paused, pause) != pause)
        log_msg(pause ? LOG_WARN : LOG_INFO, NULL,
                pause ? "consumer %s: waiting out a failure with its partitions paused"
                      : "consumer %s: partitions resumed",
                cs->cfg.group);
}

/* Waits *backoff_ms (doubling it, up to 2 s) unless stopping; returns false
 * when stopping. Meanwhile its partitions are paused and the consumer keeps
 * polling: a consumer that stops polling for max.poll.interval.ms (5 min)
 * is put out of its group, and a database outage may last longer. */
static bool back_off(consumer *cs, int *backoff_ms)
{
    pause_all(cs, true);
    int64_t until = clock_now_ms() + *backoff_ms;
    for (int64_t left; !atomic_load(&cs->stopping) && (left = until - clock_now_ms()) > 0;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(cs->rk, left < 50 ? (int)left : 50);
        if (m)
            hold(cs, m);
    }
    *backoff_ms = *backoff_ms < 2000 ? *backoff_ms * 2 : 2000;
    return !atomic_load(&cs->stopping);
}

/* True when the partition of `m` is still ours. */
static bool assigned(const rd_kafka_topic_partition_list_t *parts, const rd_kafka_message_t *m)
{
    return parts && rd_kafka_topic_partition_list_find(parts, rd_kafka_topic_name(m->rkt),
                                                       m->partition) != NULL;
}

/* Drops the messages of partitions revoked since they were fetched: their
 * new owner reads them again from the last committed offset, and committing
 * ours would move its offsets. Returns how many are left in msgs[] (and
 * their spans in spans[], when not NULL). */
static int drop_revoked(consumer *cs, rd_kafka_message_t **msgs, consumer_span *spans, int n)
{
    int kept = 0;
    for (int i = 0; i < n; i++) {
        if (assigned(cs->owned, msgs[i])) {
            if (spans)
                spans[kept] = spans[i];
            msgs[kept++] = msgs[i];
        } else {
            end_spans(cs, spans ? &spans[i] : NULL, 1, "its partition was revoked: read again");
            rd_kafka_message_destroy(msgs[i]);
            atomic_fetch_add(&cs->revoked, 1);
        }
    }
    return kept;
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

/* Counts a batch's failure that is not its messages' fault, and logs the
 * ones no time cures (a schema, privilege or disk failure) at most every
 * 10 s: an operator must act, and must not be drowned. */
static void note_failure(consumer *cs, int rc, const char *sqlstate, int n)
{
    atomic_fetch_add(&cs->retries, 1);
    if (rc != -DB_SYSTEMIC)
        return;
    atomic_fetch_add(&cs->systemic, 1);
    int64_t now = clock_now_ms();
    if (now - cs->systemic_logged_at < 10000)
        return;
    cs->systemic_logged_at = now;
    log_msg(LOG_ERROR, NULL,
            "consumer %s: the database refuses every message (SQLSTATE %s, a batch of %d): "
            "waiting for it to be mended, nothing set aside",
            cs->cfg.group, sqlstate[0] ? sqlstate : "none", n);
}

enum { ISOLATED, ISOLATION_SYSTEMIC, ISOLATION_STOPPED };

bool consumer_fault_is_systemic(const char *batch_state, const consumer_alone *alone, int n,
                                bool *aside)
{
    int same = 0;
    for (int i = 0; i < n; i++)
        same += alone[i].failed && strcmp(alone[i].sqlstate, batch_state) == 0;
    bool systemic = n > 1 && same == n;
    for (int i = 0; i < n; i++)
        aside[i] = !systemic && alone[i].failed;
    return systemic;
}

/* Runs each of msgs[0..n) alone after their batch failed with `sqlstate`
 * (transient failures waited out), then sets aside the ones
 * consumer_fault_is_systemic says to, each in a transaction of its own;
 * or none, when the fault is the database's (ISOLATION_SYSTEMIC), and all
 * are tried again later, as they are without memory for the bookkeeping.
 * *dead counts the messages set aside. */
static int isolate(consumer *cs, rd_kafka_message_t **msgs, consumer_span *spans, int n,
                   const char *sqlstate, int *dead)
{
    consumer_alone *alone = calloc((size_t)n, sizeof *alone);
    bool *aside = calloc((size_t)n, sizeof *aside);
    int how = ISOLATION_SYSTEMIC, backoff;
    *dead = 0;
    if (!alone || !aside)
        goto done;
    for (int i = 0; i < n; i++) {
        int one_dead = 0, one;
        backoff = 100;
        while ((one = run_batch(cs, &msgs[i], spans ? &spans[i] : NULL, 1, &one_dead,
                                alone[i].sqlstate)) != 0 &&
               db_transient(one)) {
            note_failure(cs, one, alone[i].sqlstate, 1);
            if (!back_off(cs, &backoff)) {
                how = ISOLATION_STOPPED;
                goto done;
            }
        }
        alone[i].failed = one != 0;
        if (one == 0)
            *dead += one_dead;
    }
    if (consumer_fault_is_systemic(sqlstate, alone, n, aside))
        goto done;
    for (int i = 0; i < n; i++) {
        backoff = 100;
        while (aside[i] && dead_letter_alone(cs, msgs[i], alone[i].sqlstate) != 0)
            if (!back_off(cs, &backoff)) {
                how = ISOLATION_STOPPED;
                goto done;
            }
        *dead += aside[i];
    }
    how = ISOLATED;
done:
    free(alone);
    free(aside);
    return how;
}

/* Runs the *n messages until they are durable: as a batch, or one by one
 * when the batch fails for a reason that may be one message's,
 * dead-lettering the message that fails alone. A failure that is not the
 * messages' (the server away, a conflict, a schema or privilege or disk
 * failure, or every message failing alone as their batch did) is waited
 * out with back-off and never sets anything aside; messages whose
 * partition is revoked meanwhile are dropped (*n shrinks). Returns false
 * when nothing may be acknowledged: the consumer is stopping, or no message
 * is left. */
static bool process(consumer *cs, rd_kafka_message_t **msgs, consumer_span *spans, int *count)
{
    int dead = 0, rc, backoff = 100, n = *count;
    char sqlstate[6];
    for (;;) {
        rc = run_batch(cs, msgs, spans, n, &dead, sqlstate);
        if (rc != 0 && !db_transient(rc)) {
            /* The batch rolled back: find the message that fails alone. */
            atomic_fetch_add(&cs->isolations, 1);
            log_msg(LOG_WARN, NULL,
                    "consumer %s: a batch of %d failed (SQLSTATE %s); each goes alone",
                    cs->cfg.group, n, sqlstate[0] ? sqlstate : "none");
            int how = isolate(cs, msgs, spans, n, sqlstate, &dead);
            if (how == ISOLATION_STOPPED)
                return false;
            rc = how == ISOLATED ? 0 : -DB_SYSTEMIC;
        }
        if (rc == 0)
            break;
        note_failure(cs, rc, sqlstate, n);
        if (!back_off(cs, &backoff))
            return false;
        if ((n = *count = drop_revoked(cs, msgs, spans, n)) == 0) {
            pause_all(cs, false); /* nothing of ours waits any more */
            return false;
        }
    }
    atomic_fetch_add(&cs->batches, 1);
    atomic_fetch_add(&cs->messages, (uint64_t)n);
    atomic_fetch_add(&cs->dead_letters, (uint64_t)dead);
    if (atomic_load(&cs->paused))
        pause_all(cs, false);
    return true;
}

/* Counts everything up to each partition's last message as handled, for
 * the partitions that are still ours; flush_offsets sends it to Kafka. */
static void note_offsets(consumer *cs, rd_kafka_message_t **msgs, int n)
{
    for (int i = 0; i < n; i++) {
        const char *topic = rd_kafka_topic_name(msgs[i]->rkt);
        if (!assigned(cs->owned, msgs[i]))
            continue;
        if (!cs->handled && !(cs->handled = rd_kafka_topic_partition_list_new(n)))
            return; /* out of memory: not acknowledged, so read again later */
        rd_kafka_topic_partition_t *p =
            rd_kafka_topic_partition_list_find(cs->handled, topic, msgs[i]->partition);
        if (!p)
            p = rd_kafka_topic_partition_list_add(cs->handled, topic, msgs[i]->partition);
        if (msgs[i]->offset + 1 > p->offset)
            p->offset = msgs[i]->offset + 1;
    }
}

/* Commits the handled offsets when commit_interval_ms has passed since the
 * last commit, or at once when `now`. Only the consumer thread (or the
 * close, after it ended) calls it, from its polls' callbacks included. */
static void flush_offsets(consumer *cs, bool now)
{
    if (!cs->handled)
        return;
    int64_t t = clock_now_ms();
    if (!now && t - cs->committed_at < cs->cfg.commit_interval_ms)
        return;
    /* Asynchronous (on_committed hears the outcome): a lost commit only
     * means a redelivery, which the handlers absorb. librdkafka finishes
     * it before a revocation completes and before its close returns. */
    rd_kafka_resp_err_t e = rd_kafka_commit(cs->rk, cs->handled, 1);
    if (e) {
        atomic_fetch_add(&cs->commits_failed, 1);
        log_msg(LOG_WARN, NULL, "offset commit: %s", rd_kafka_err2str(e));
    }
    rd_kafka_topic_partition_list_destroy(cs->handled);
    cs->handled = NULL;
    cs->committed_at = t;
}

static void on_committed(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    (void)rk, (void)offsets;
    consumer *cs = opaque;
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        atomic_fetch_add(&cs->commits_ok, 1);
    } else {
        atomic_fetch_add(&cs->commits_failed, 1);
        log_msg(LOG_WARN, NULL,
                "consumer %s: offset commit failed: %s (the messages will be "
                "delivered again)",
                cs->cfg.group, rd_kafka_err2str(err));
    }
}

/* Eager rebalancing: every partition is revoked, then the new set
 * assigned. A batch in hand keeps going; drop_revoked and note_offsets
 * leave out what is no longer ours. */
static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    consumer *cs = opaque;
    atomic_fetch_add(&cs->rebalances, 1);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rd_kafka_assign(rk, parts);
        if (cs->owned)
            rd_kafka_topic_partition_list_destroy(cs->owned);
        cs->owned = rd_kafka_topic_partition_list_copy(parts);
        atomic_store(&cs->assigned, parts->cnt);
        cs->empty_since = parts->cnt ? 0 : clock_now_ms();
        /* librdkafka keeps a partition's pause flag across revocation and
         * assignment: set it to what the consumer is doing now, or a
         * partition paused during an old outage would never be read again.
         * Still waiting out a failure: the new partitions wait too. */
        if (atomic_load(&cs->paused))
            rd_kafka_pause_partitions(rk, parts);
        else
            rd_kafka_resume_partitions(rk, parts);
        log_msg(LOG_INFO, NULL, "consumer %s: %d partition(s) assigned", cs->cfg.group, parts->cnt);
    } else {
        if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
            log_msg(LOG_WARN, NULL, "consumer %s: rebalance: %s", cs->cfg.group,
                    rd_kafka_err2str(err));
        rd_kafka_resume_partitions(rk, parts); /* no pause outlives its assignment */
        flush_offsets(cs, true);               /* what was handled, while it is still ours */
        rd_kafka_assign(rk, NULL);
        if (cs->owned)
            rd_kafka_topic_partition_list_destroy(cs->owned);
        cs->owned = NULL;
        atomic_store(&cs->assigned, 0);
        cs->empty_since = clock_now_ms();
        log_msg(LOG_INFO, NULL, "consumer %s: %d partition(s) revoked", cs->cfg.group, parts->cnt);
    }
}

/* Number of partitions of the consumer's topic (0 when it does not exist,
 * -ETIMEDOUT when the cluster did not answer). */
static int topic_partitions(consumer *cs)
{
    rd_kafka_topic_t *t = rd_kafka_topic_new(cs->rk, cs->cfg.topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int n = -ETIMEDOUT;
    if (t && rd_kafka_metadata(cs->rk, 0, t, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR)
        n = md->topic_cnt == 1 && !md->topics[0].err ? md->topics[0].partition_cnt : 0;
    if (md)
        rd_kafka_metadata_destroy(md);
    if (t)
        rd_kafka_topic_destroy(t);
    return n;
}

/* Number of members of the consumer's group, or -ETIMEDOUT when the
 * cluster did not answer. */
static int group_members(consumer *cs)
{
    const struct rd_kafka_group_list *groups = NULL;
    int n = -ETIMEDOUT;
    if (rd_kafka_list_groups(cs->rk, cs->cfg.group, &groups, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        groups->group_cnt == 1)
        n = groups->groups[0].member_cnt;
    if (groups)
        rd_kafka_group_list_destroy(groups);
    return n;
}

/* librdkafka 2.0.2 can leave a whole group without partitions when the
 * topic appears while the group rebalances (a broker that lost its data,
 * the topic created again after the consumers came back): the group's
 * leader assigned with the old metadata, and no later metadata refresh
 * triggers a new rebalance (librdkafka issue 3008). A consumer that has had
 * no partition for 20 s, while its topic has partitions enough for every
 * member of its group, joins again. Checked every 10 s, only while empty;
 * a consumer left out because the group has more members than partitions
 * stays out. */
static void rejoin_if_stranded(consumer *cs)
{
    int64_t now = clock_now_ms();
    if (!cs->empty_since || now - cs->empty_since < 20000 || now < cs->next_stranded_check)
        return;
    cs->next_stranded_check = now + 10000;
    int partitions = topic_partitions(cs), members = group_members(cs);
    if (partitions <= 0 || members < 0 || members > partitions)
        return;
    log_msg(LOG_WARN, NULL,
            "consumer %s: no partition for %lld s while %s has %d for %d member(s); joining "
            "the group again",
            cs->cfg.group, (long long)(now - cs->empty_since) / 1000, cs->cfg.topic, partitions,
            members);
    atomic_fetch_add(&cs->rejoins, 1);
    rd_kafka_topic_partition_list_t *subs = NULL;
    if (rd_kafka_subscription(cs->rk, &subs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_unsubscribe(cs->rk);
        rd_kafka_resp_err_t e = rd_kafka_subscribe(cs->rk, subs);
        if (e)
            log_msg(LOG_ERROR, NULL, "consumer %s: subscribing again: %s", cs->cfg.group,
                    rd_kafka_err2str(e));
        rd_kafka_topic_partition_list_destroy(subs);
    }
    cs->empty_since = clock_now_ms();
}

static void *consumer_main(void *arg)
{
    pthread_setname_np(pthread_self(), "consumer"); /* for top -H, perf, pidstat -t */
    consumer *cs = arg;
    rd_kafka_message_t **msgs = calloc((size_t)cs->cfg.batch, sizeof *msgs);
    int last_n = 0;
    while (msgs && !atomic_load(&cs->stopping)) {
        int n = 0, taken = 0;
        /* What arrived while the last batch waited goes first. */
        for (; taken < cs->nheld && n < cs->cfg.batch; taken++)
            msgs[n++] = cs->held[taken];
        if (taken) {
            memmove(cs->held, cs->held + taken, (size_t)(cs->nheld - taken) * sizeof *cs->held);
            cs->nheld -= taken;
        }
        rd_kafka_message_t *m =
            n < cs->cfg.batch ? rd_kafka_consumer_poll(cs->rk, n ? 0 : 200) : NULL;
        /* A batch takes what arrives within gather_ms of its first message:
         * fewer, larger transactions, each one commit. It waits only when
         * the last batch had company: a lone message (light load, where
         * commits are plentiful) goes at once. */
        int gather_ms = last_n > 1 ? cs->cfg.gather_ms : 0;
        int64_t first = clock_now_ms();
        while (m) {
            if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    log_msg(LOG_WARN, NULL, "consumer %s: %s", cs->cfg.group,
                            rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
            } else {
                msgs[n++] = m;
            }
            int64_t left = gather_ms - (clock_now_ms() - first);
            m = n < cs->cfg.batch ? rd_kafka_consumer_poll(cs->rk, left > 0 ? (int)left : 0) : NULL;
        }
        if (n == 0 || (n = drop_revoked(cs, msgs, NULL, n)) == 0) {
            flush_offsets(cs, false);
            rejoin_if_stranded(cs);
            continue;
        }
        last_n = n;
        consumer_span *spans = begin_spans(cs, msgs, n);
        trace_span batch;
        begin_batch_span(cs, &batch, spans, n);
        trace_log_context(&batch.ctx); /* the thread's lines name the batch's trace */
        bool handled = process(cs, msgs, spans, &n);
        if (handled) {
            note_offsets(cs, msgs, n);
            flush_offsets(cs, cs->cfg.commit_interval_ms == 0);
            if (cs->cfg.after_commit)
                cs->cfg.after_commit(cs->cfg.app);
        }
        end_spans(cs, spans, n, handled ? NULL : "not acknowledged: read again later");
        trace_end(cs->cfg.traces, &batch);
        trace_log_context(NULL);
        free(spans);
        for (int i = 0; i < n; i++)
            rd_kafka_message_destroy(msgs[i]);
    }
    free(msgs);
    flush_offsets(cs, true);
    return NULL;
}

consumer *consumer_start(db_pool *pool, const consumer_config *cfg)
{
    consumer *cs = calloc(1, sizeof *cs);
    if (!cs)
        return NULL;
    cs->pool = pool;
    cs->cfg = *cfg;
    cs->empty_since = clock_now_ms(); /* none until the first assignment */
    const char *topics[] = {cfg->topic, NULL};
    kafka_consumer_hooks hooks = {
        .rebalance = on_rebalance, .committed = on_committed, .opaque = cs};
    cs->rk = kafka_consumer_new(cfg->brokers, cfg->group, cfg->client_id, topics, &hooks);
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
    for (int i = 0; i < cs->nheld; i++)
        rd_kafka_message_destroy(cs->held[i]); /* not acknowledged: read again later */
    free(cs->held);
    kafka_destroy(cs->rk); /* its close may revoke, through on_rebalance */
    if (cs->handled)
        rd_kafka_topic_partition_list_destroy(cs->handled);
    if (cs->owned)
        rd_kafka_topic_partition_list_destroy(cs->owned);
    free(cs);
}

/* Messages behind the ends of the partitions the consumer owns, or -1 (the
 * gauge's "unknown") when the broker did not say. */
static int64_t lag(consumer *cs)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    int64_t total = 0;
    if (rd_kafka_assignment(cs->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    rd_kafka_position(cs->rk, parts);
    /* A partition with nothing read since it was assigned has no position
     * yet: it starts from the group's committed offset, not from the
     * partition's beginning. Asked of the broker only then (a round trip). */
    rd_kafka_topic_partition_list_t *committed = NULL;
    for (int i = 0; i < parts->cnt && !committed; i++)
        if (parts->elems[i].offset < 0)
            committed = rd_kafka_topic_partition_list_copy(parts);
    if (committed && rd_kafka_committed(cs->rk, committed, 1000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_topic_partition_list_destroy(committed);
        committed = NULL;
    }
    for (int i = 0; i < parts->cnt; i++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_topic_partition_t *p = &parts->elems[i];
        if (rd_kafka_get_watermark_offsets(cs->rk, p->topic, p->partition, &lo, &hi) != 0 || hi < 0)
            continue;
        int64_t pos = p->offset >= 0                                 ? p->offset
                      : committed && committed->elems[i].offset >= 0 ? committed->elems[i].offset
                                                                     : lo;
        if (hi > pos)
            total += hi - pos;
    }
    rd_kafka_topic_partition_list_destroy(parts);
    if (committed)
        rd_kafka_topic_partition_list_destroy(committed);
    return total;
}

void consumer_refresh(consumer *cs)
{
    if (cs)
        atomic_store(&cs->lag_seen, lag(cs));
}

/* One counter or gauge of this consumer, labelled by its topic. */
static void series(FILE *out, const char *name, const char *type, const char *help,
                   const char *topic, uint64_t value)
{
    char labels[128];
    snprintf(labels, sizeof labels, "topic=\"%s\"", topic);
    metrics_header(out, name, type, help);
    metrics_sample(out, name, labels, value);
}

void consumer_metrics(consumer *cs, FILE *out)
{
    const char *t = cs->cfg.topic;
    series(out, "consumer_batches_total", "counter", "Batches handled, one transaction each", t,
           atomic_load(&cs->batches));
    series(out, "consumer_messages_total", "counter", "Messages handled", t,
           atomic_load(&cs->messages));
    series(out, "consumer_retries_total", "counter", "Batches retried after a transient failure", t,
           atomic_load(&cs->retries));
    series(out, "consumer_systemic_failures_total", "counter",
           "Batches retried because the database refused every message alike (a schema, "
           "privilege, limit or disk failure): nothing set aside",
           t, atomic_load(&cs->systemic));
    series(out, "consumer_isolated_batches_total", "counter",
           "Batches that failed for a reason a retry cannot cure, then run a message at a time", t,
           atomic_load(&cs->isolations));
    series(out, "dead_letters_total", "counter", "Messages set aside in dead_letters", t,
           atomic_load(&cs->dead_letters));
    series(out, "consumer_rebalances_total", "counter",
           "Partition assignments and revocations the consumer took part in", t,
           atomic_load(&cs->rebalances));
    series(out, "consumer_rejoins_total", "counter",
           "Times the consumer joined its group again after being left without partitions", t,
           atomic_load(&cs->rejoins));
    series(out, "consumer_revoked_messages_total", "counter",
           "Messages in hand dropped because their partition went to another member", t,
           atomic_load(&cs->revoked));
    metrics_header(out, "consumer_offset_commits_total", "counter",
                   "Offset commits by outcome (a failed one means a redelivery)");
    char labels[160];
    snprintf(labels, sizeof labels, "topic=\"%s\",result=\"ok\"", t);
    metrics_sample(out, "consumer_offset_commits_total", labels, atomic_load(&cs->commits_ok));
    snprintf(labels, sizeof labels, "topic=\"%s\",result=\"failed\"", t);
    metrics_sample(out, "consumer_offset_commits_total", labels, atomic_load(&cs->commits_failed));
    series(out, "consumer_assigned_partitions", "gauge", "Partitions the consumer owns now", t,
           (uint64_t)atomic_load(&cs->assigned));
    series(out, "consumer_paused", "gauge",
           "1 while the consumer waits out a failure with its partitions paused", t,
           atomic_load(&cs->paused) ? 1 : 0);
    metrics_header(out, "consumer_lag", "gauge",
                   "Messages behind the partitions' ends (as of the last refresh, every 2 s)");
    fprintf(out, "consumer_lag{topic=\"%s\"} %" PRId64 "\n", t, atomic_load(&cs->lag_seen));
}

static const cfg_setting consumer_settings_list[] = {
    CFG_I("CONSUMER_BATCH", consumer_settings, batch, 1, 10000, 256,
          "messages handled per consumer transaction"),
    CFG_I("CONSUMER_GATHER_MS", consumer_settings, gather_ms, 0, 1000, 5,
          "a consumer whose last batch had more than one message waits this long for more "
          "before its transaction; a lone message goes at once"),
    CFG_I("CONSUMER_COMMIT_INTERVAL_MS", consumer_settings, commit_interval_ms, 0, 60000, 1000,
          "consumers commit handled offsets to Kafka at most this often, and at once on a "
          "revoke or a stop; a crash redelivers at most this much, which the inbox absorbs "
          "(0: after every batch)"),
};
const cfg_table consumer_settings_table = CFG_TABLE("consumer", consumer_settings_list);
