/* Group commit at the edge (DESIGN §6). Requests that each need a durable
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
 * a "transaction" one statement. */
#ifndef SHOP_GROUP_H
#define SHOP_GROUP_H

#include "lib/http.h"

#include <stdbool.h>
#include <stdio.h>

/* The first member of the service's own item struct, which is malloc'd by
 * its handler and freed by the group after the answer. */
typedef struct group_item {
    http_pending *pending;
    http_res res; /* the answer, filled by group_run_fn */
    struct group_item *next;
} group_item;

/* Runs items[0..n) (n >= 1), filling every item's res: the 201s only once
 * their transaction committed. Called on a writer thread. */
typedef void (*group_run_fn)(void *app, group_item **items, int n);

typedef struct group_config {
    const char *name; /* the metrics' label, e.g. "orders" */
    int writers;      /* transactions in flight at once */
    int max;          /* requests per transaction, at most */
    int gather_us;    /* under load, wait this long for more (0: never) */
    group_run_fn run;
    void *app;
} group_config;

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
 * group_gathers_total, group_writers, group_waiting, group_writing, a line
 * for each of groups[0..n) (NULL ones skipped) labelled with its name. */
void group_metrics(group *const *groups, int n, FILE *out);

#endif
