/* The transactional outbox (docs/architecture.md, "One order"). A service writes a message with
 * outbox_add in the same transaction as the change it announces; the relay
 * thread claims rows in batches (FOR UPDATE SKIP LOCKED, so several
 * instances share the work), produces them with the idempotent producer,
 * waits for the broker's acknowledgements and deletes exactly the rows that
 * were acknowledged, in one statement. While the broker acknowledges one
 * batch, the next is claimed and produced (two in flight, one producer, so
 * a key's messages keep their order). Rows whose delivery failed stay and
 * are sent again. The relay is woken in-process after a commit
 * and polls as a fallback (rows of other instances, rows left after a
 * restart). Each service's database has an `outbox` table of this shape:
 * id bigserial, topic text, key text, payload text, created_at, and
 * traceparent (the W3C context of the span that wrote it, or NULL).
 *
 * Traces (docs/architecture.md, "Traces"): each row with a traceparent is
 * sent in a producer span, its child, from the produce to the broker's
 * acknowledgement ("send TOPIC", with messaging.* tags), and the message
 * carries that span's context in its Kafka header `traceparent`. */
#ifndef SHOP_OUTBOX_H
#define SHOP_OUTBOX_H

#include "lib/config.h"
#include "lib/db.h"
#include "lib/trace.h"

#include <stdio.h>

extern const db_stmt outbox_stmts[];

/* SQL for a service's own statement that queues messages as it changes
 * something (a data-modifying WITH of one statement): OUTBOX_INSERT
 * followed by a SELECT of (topic, key, payload, traceparent) rows, in
 * their order (traceparent NULL when the change is in no trace).
 * The outbox's table is this module's; no other SQL names it. */
#define OUTBOX_INSERT "INSERT INTO outbox (topic, key, payload, traceparent)"
/* When the oldest message still waiting was queued (NULL: none waits). */
#define OUTBOX_OLDEST_QUEUED_AT "(SELECT created_at FROM outbox ORDER BY id LIMIT 1)"

/* The rows a relay round deletes: of the n rows it claimed (their ids in
 * column 0 of `rows`), those whose delivery the broker acknowledged
 * (outcome[i] 1; 0: no report, -1: failed or refused by the producer), as
 * an array literal in `ids` (db_array_free it). Every other row stays in
 * the outbox and goes again: a duplicate the consumers absorb, never a
 * loss. Returns how many. */
int outbox_acknowledged(const PGresult *rows, const int *outcome, int n, db_array *ids);

/* Queues a message inside the caller's transaction, in the trace of
 * `trace` (NULL, or not valid: in none). Returns 0 or -DB_*. */
int outbox_add(db_conn *conn, const char *topic, const char *key, const char *payload,
               const trace_ctx *trace);

/* Queues n messages to one topic, in this order, in one statement; each
 * in the trace of traces[i] (traces NULL: none in any). */
int outbox_add_many(db_conn *conn, const char *topic, const char *const *keys,
                    const char *const *payloads, const trace_ctx *traces, int n);

/* `ctx` as the text an outbox row's traceparent takes: its traceparent,
 * or "" when it is NULL or not valid (the SQL stores NULL for ""). */
void outbox_traceparent(const trace_ctx *ctx, char out[TRACE_PARENT_LEN + 1]);

typedef struct outbox_relay outbox_relay;

/* The relay's settings every service with messages reads. */
typedef struct outbox_settings {
    int64_t batch, poll_ms, gather_ms, rounds;
} outbox_settings;
extern const cfg_table outbox_settings_table;

typedef struct outbox_relay_config {
    const char *brokers;
    const char *client_id;
    int batch;   /* rows per claim */
    int poll_ms; /* fallback poll interval */
    /* After a round that sent rows, wait this long for more before the next
     * (unless the batch was full): every round costs a commit, and commits
     * are the database's scarcest resource under load. */
    int gather_ms;
    int rounds;     /* batches in flight at once (1: no pipelining; at most 8) */
    tracer *traces; /* producer spans (NULL: none; contexts still go on) */
} outbox_relay_config;

/* Starts the relay thread. `pool` is borrowed for the relay's life.
 * Returns NULL (logged) when the producer cannot be configured. */
outbox_relay *outbox_relay_start(db_pool *pool, const outbox_relay_config *cfg);

/* Tells the relay that rows were committed. Cheap; call after COMMIT.
 * A NULL relay (a process that runs none: the fuzz targets) is a no-op. */
void outbox_relay_wake(outbox_relay *relay);

/* Stops the thread (it finishes its batch) and frees the relay. NULL-safe. */
void outbox_relay_stop(outbox_relay *relay);

/* For tests: puts the producer in the fatal state librdkafka 2.0.2's
 * idempotent producer can reach after a broker loss, as if it had; the
 * relay must replace it. */
void outbox_relay_fail_producer(outbox_relay *relay);

/* True when the relay's producer can reach the broker. */
bool outbox_relay_broker_ok(outbox_relay *relay, int timeout_ms);

/* Writes the relay's series: backlog, published, failures, producer
 * renewals, batches. */
void outbox_relay_metrics(outbox_relay *relay, FILE *out);

/* Counts the outbox for outbox_relay_metrics: called by a background
 * ticker, never by a request's thread (a backlog of a long outage takes a
 * while to count). NULL-safe. */
void outbox_relay_refresh(outbox_relay *relay);

#endif
