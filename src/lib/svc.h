/* Start-up and shut-down steps every service takes the same way. */
#ifndef SHOP_SVC_H
#define SHOP_SVC_H

#include "lib/db.h"
#include "lib/http.h"
#include "lib/outbox.h"

#include <signal.h>

/* Reads HTTP_HOST, HTTP_PORT, HTTP_THREADS, HTTP_MAX_BODY and
 * HTTP_IDLE_TIMEOUT_S. Returns 0, or -EINVAL after logging the bad one. */
int svc_http_config(http_config *cfg, int default_port);

/* Blocks SIGTERM and SIGINT in the calling thread (call it before any
 * thread starts, so they all inherit the mask) and fills `set` with them. */
void svc_block_signals(sigset_t *set);

/* Applies the migrations in `dir` to `conninfo`, retrying every second
 * while the database is unreachable. Returns 0, -EINTR when a signal of
 * `set` arrived meanwhile, or -DB_FAILED for a migration that cannot apply. */
int svc_migrate(const char *conninfo, const char *dir, const sigset_t *set);

/* The service's connection pool, sized and bounded by DB_POOL_SIZE,
 * DB_STALL_MS, DB_CONNECT_TIMEOUT_MS and DB_STATEMENT_TIMEOUT_MS
 * (db_pool_guard), opened now. NULL on a bad setting or no memory. */
db_pool *svc_db_pool(const char *conninfo, const db_stmt *const *stmt_sets);

/* /readyz for a service with a database and an outbox relay: fills
 * `checks` and returns true when both the database and the broker answer. */
bool svc_ready(db_pool *db, outbox_relay *relay, json_t *checks);

/* Answers a database failure: 503 when retrying may help, else 500. */
void svc_db_error(http_res *res, int rc);

/* Waits for a signal of `set`; returns its number. */
int svc_wait(const sigset_t *set);

#endif
