/* Group commit at the edge (docs/architecture.md, "One order"). Requests that each need a durable
 * write wait in one queue, their connections suspended (no HTTP thread
 * held); a writer takes every request waiting, up to a bound, has the
 * service run them as ONE transaction, and answers each after its commit.
 * The orders a second are then bounded by the rows a commit can carry, not
 * by the commits a second. At light load a request finds a writer idle and
 * goes at once, alone: there is no window to wait out. Under load (the
 * writer's last group carried more than one request) a writer waits up to
 * gather_us for company before it begins: a few more requests per commit
 * (one WAL flush), for a wait of a millisecond or two. The services' reads
 * by key use the same queue (svc_read): a "writer" there is a reader, and
 * a "transaction" one statement.
 *
 * With a deadline, no request waits for ever: one still queued at its
 * deadline is taken out and answered (never run afterwards), and a group's
 * transaction is bounded by its earliest deadline (the service cancels
 * what has not committed by then: db_set_deadline). */
#ifndef SHOP_GROUP_H
#define SHOP_GROUP_H

#include "lib/http.h"
#include "lib/trace.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* The first member of the service's own item struct, which is malloc'd by
 * its handler and freed by the group after the answer. */
typedef struct group_item {
    http_pending *pending;
    http_res res;        /* the answer, filled by group_run_fn */
    int64_t deadline_ms; /* clock_now_ms; 0: none (set by group_submit) */
    trace_ctx trace;     /* the request's; run's work for it continues it */
    trace_span wait;     /* its time in the queue (group_config.traces) */
    struct group_item *next;
} group_item;

/* Runs items[0..n) (n >= 1), filling every item's res: the 201s only once
 * their transaction committed. Called on a writer thread. */
typedef void (*group_run_fn)(void *app, group_item **items, int n);

/* Answers an item that waited past its deadline without being taken: it
 * was never run, and never will be. Called on the group's own thread. */
typedef void (*group_expire_fn)(void *app, group_item *item);

typedef struct group_config {
    const char *name; /* the metrics' label, e.g. "orders" */
    int writers;      /* transactions in flight at once */
    int max;          /* requests per transaction, at most */
    int gather_us;    /* under load, wait this long for more (0: never) */
    /* How long a request may wait in all, from group_submit (0: for
     * ever). One still queued then is taken out and answered by `expire`;
     * run gets each item's deadline_ms, and must not commit past the
     * earliest (group_deadline). */
    int deadline_ms;
    /* Spans, in each request's trace: "NAME wait" (in the queue) and
     * "NAME group" (its group's run, tagged with the group's size); NULL:
     * none. Borrowed. */
    tracer *traces;
    group_run_fn run;
    group_expire_fn expire;
    void *app;
} group_config;

/* The earliest deadline of items[0..n), 0 when none has one. */
int64_t group_deadline(group_item *const *items, int n);

typedef struct group group;

/* Starts the writers. NULL on error. */
group *group_start(const group_config *cfg);

/* From a handler: suspends the request and queues `item` for the next
 * group. Returns false (nothing suspended, `item` still the caller's) when
 * the group is stopping: the handler answers itself. */
bool group_submit(group *g, http_req *req, group_item *item);

/* Takes no more requests, commits and answers those waiting, stops the
 * writers. Call it before http_stop; group_submit and group_metrics may
 * still be called after it. NULL-safe. */
void group_stop(group *g);

/* Stops (if not yet) and frees, once nothing calls the group any more
 * (after http_stop). NULL-safe. */
void group_free(group *g);

/* group_commits_total, group_requests_total, group_largest,
 * group_gathers_total, group_expired_total, group_writers, group_waiting,
 * group_writing, a line for each of groups[0..n) (NULL ones skipped)
 * labelled with its name. */
void group_metrics(group *const *groups, int n, FILE *out);

#endif
