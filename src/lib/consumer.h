/* A batch consumer that turns Kafka messages into database changes
 * exactly once (docs/architecture.md, "The guarantees"). It takes up to `batch` messages per poll,
 * handles them all in ONE transaction, commits it, and only then counts
 * its Kafka offsets as handled. So a message is acknowledged only after its
 * effects are durable, and a crash anywhere redelivers it (the handler
 * dedups). Handled offsets go to Kafka at most every commit_interval_ms,
 * and at once when partitions are revoked or the consumer stops: an offset
 * commit is a write to the broker's log, and one per batch cost the broker
 * more than the messages themselves.
 *
 * Failures are told apart:
 * - a poison message (the handler marks its verdict poison: unparseable,
 *   unknown type or version) is written to `dead_letters` with the reason
 *   and raw bytes, in the same transaction, and the partition moves on;
 * - a transient failure (database unreachable, serialization conflict)
 *   rolls back and retries the same batch with back-off, for as long as it
 *   takes: nothing is acknowledged meanwhile, nothing is dead-lettered;
 * - any other database error on a batch is retried message by message, and
 *   the one message that fails by itself is dead-lettered, so one bad
 *   message never blocks its partition.
 * While a transient failure is waited out, the consumer pauses its
 * partitions and keeps polling, so that Kafka does not put it out of its
 * group however long the outage lasts. When partitions are revoked (a
 * rebalance: an instance joined or left), the messages of those partitions
 * still in hand are neither handled nor committed: the new owner reads them
 * from the last committed offset.
 * Each service's database has a `dead_letters` table: id, topic, partition,
 * "offset", key bytea, payload bytea, reason, created_at. */
#ifndef SHOP_CONSUMER_H
#define SHOP_CONSUMER_H

#include "lib/config.h"
#include "lib/db.h"
#include "lib/trace.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>

#include <stdbool.h>

extern const db_stmt consumer_stmts[];

/* What a handler says of one message of its batch. */
typedef struct consumer_verdict {
    bool poison;   /* set it aside in dead_letters */
    char why[256]; /* the reason, when poison */
} consumer_verdict;

/* How one message of a failed batch fared when it ran alone. */
typedef struct consumer_alone {
    bool failed;
    char sqlstate[6]; /* when failed: the database's code ("" if none) */
} consumer_alone;

/* The rule that keeps a database failure out of the dead letters: after a
 * batch of n failed with SQLSTATE `batch_state` and each of its messages
 * ran alone (alone[i]), returns true, marking none, when every one of
 * several failed alone as the batch did: the fault is the database's (a
 * schema, privilege, limit or disk failure), and all are tried again
 * later. Otherwise returns false and marks aside[i] for each message that
 * failed alone: that failure is its own, and it is dead-lettered. */
bool consumer_fault_is_systemic(const char *batch_state, const consumer_alone *alone, int n,
                                bool *aside);

/* A message's spans (docs/architecture.md, "Traces"): "process TOPIC"
 * (kind consumer), the child of the producer span whose context the
 * message carries in its `traceparent` header (a new trace when it has
 * none), from the batch's start until its transaction committed; and
 * "TOPIC transaction", its child, one try of the batch's transaction.
 * The handler tags both (consumer_tag) and makes its own spans children
 * of `transaction`; what it writes to an outbox goes on in
 * `transaction`'s context. With neither a tracer nor a context, none has
 * ids (trace_valid false). */
typedef struct consumer_span {
    trace_span message, transaction;
} consumer_span;

/* Tags a message's two spans alike (e.g. its order id). */
void consumer_tag(consumer_span *span, const char *key, const char *value);

/* Handles msgs[0..n) in the batch's transaction, with as few statements as
 * it can (set-based SQL over the whole batch). Marks each message it cannot
 * handle in verdicts[] (zeroed by the caller). spans[i] are message i's
 * (spans NULL: no message is traced, e.g. a dead letter's replay). Returns
 * 0 or -DB_*. */
typedef int (*consumer_handle_fn)(db_conn *conn, rd_kafka_message_t *const *msgs, int n, void *app,
                                  consumer_verdict *verdicts, consumer_span *spans);

/* The consumer's settings every service with messages reads. */
typedef struct consumer_settings {
    int64_t batch, gather_ms, commit_interval_ms;
} consumer_settings;
extern const cfg_table consumer_settings_table;

typedef struct consumer_config {
    const char *brokers;
    const char *group;
    const char *client_id;
    const char *topic;
    int batch;
    int gather_ms; /* after a batch's first message, wait this long for more */
    /* Handled offsets are committed to Kafka at most this often (0: after
     * every batch); a crash redelivers at most this much, deduplicated. */
    int commit_interval_ms;
    consumer_handle_fn handle;
    void (*after_commit)(void *app); /* e.g. wake the outbox relay; may be NULL */
    void *app;
    /* Each message's spans, and a batch's own ("process TOPIC batch", a
     * trace of its own, tagged with its size and its messages' contexts,
     * as the messaging conventions' links, which Zipkin's format lacks);
     * NULL: none, and no context goes on. Borrowed. */
    tracer *traces;
} consumer_config;

typedef struct consumer consumer;

/* Subscribes and starts the consumer thread. `pool` and `cfg`'s strings are
 * borrowed for the consumer's life. NULL (logged) on a configuration error. */
consumer *consumer_start(db_pool *pool, const consumer_config *cfg);

/* Stops after the batch in hand (unacknowledged messages are redelivered
 * later), leaves the group, frees. NULL-safe. */
void consumer_stop(consumer *c);

/* Writes batches, messages, dead letters, retries, rebalances, offset
 * commits by outcome, the paused flag and lag, labelled by topic. */
void consumer_metrics(consumer *c, FILE *out);

/* Measures the consumer's lag for consumer_metrics (a broker round trip at
 * worst): called by a background ticker, never by a request's thread, so
 * that /metrics answers from memory. NULL-safe. */
void consumer_refresh(consumer *c);

#endif
