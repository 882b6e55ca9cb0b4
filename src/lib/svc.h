/* Start-up and shut-down steps every service takes the same way. */
#ifndef SHOP_SVC_H
#define SHOP_SVC_H

#include "lib/auth.h"
#include "lib/consumer.h"
#include "lib/db.h"
#include "lib/group.h"
#include "lib/http.h"
#include "lib/outbox.h"

#include <signal.h>

/* Reads HTTP_HOST, HTTP_PORT, HTTP_THREADS, HTTP_MAX_BODY and
 * HTTP_IDLE_TIMEOUT_S. Returns 0, or -EINVAL after logging the bad one. */
int svc_http_config(http_config *cfg, int default_port);

/* Blocks SIGTERM and SIGINT in the calling thread (call it before any
 * thread starts, so they all inherit the mask) and fills `set` with them. */
void svc_block_signals(sigset_t *set);

/* Applies the migrations in `dir` to `conninfo` (the value of the setting
 * named `setting`), retrying every second while the database does not
 * answer. Returns 0, -EINTR when a signal of `set` arrived meanwhile,
 * -DB_REFUSED at once when the server turns us away or the string cannot
 * be read (a wrong setting: logged, naming it, for the caller to exit), or
 * -DB_FAILED for a migration that cannot apply. */
int svc_migrate(const char *setting, const char *conninfo, const char *dir, const sigset_t *set);

/* The service's connection pool, sized and bounded by DB_POOL_SIZE,
 * DB_STALL_MS, DB_CONNECT_TIMEOUT_MS and DB_STATEMENT_TIMEOUT_MS
 * (db_pool_guard), opened now. NULL on a bad setting or no memory. */
db_pool *svc_db_pool(const char *conninfo, const db_stmt *const *stmt_sets);

/* /readyz for a service with a database and an outbox relay (NULL: none,
 * no broker to check): fills `checks` and returns true when both the
 * database and the broker answer. */
bool svc_ready(db_pool *db, outbox_relay *relay, json_t *checks);

/* The caller's identity: the token of `Authorization: Bearer ...`, else of
 * the AUTH_COOKIE cookie, verified with `key` for `audience` now. Returns 0
 * and fills `claims` (and `via_cookie`, when not NULL), or -1 with a 401 in
 * `res` (no token, or why it was refused). */
int svc_authenticate(http_req *req, http_res *res, const auth_key *key, auth_cache *cache,
                     const char *audience, auth_claims *claims, bool *via_cookie);

/* Answers a database failure: 503 (with Retry-After) when retrying may
 * help, else 500. */
void svc_db_error(http_res *res, int rc);

/* Answers the failure of a write that ran on `c` (NULL: none was taken):
 * when its COMMIT, or a statement outside a transaction, lost its
 * connection before the answer (db_in_doubt), whether it happened is
 * unknown, and the answer says so: 503 outcome_unknown, Retry-After. A
 * retry with the same Idempotency-Key gets the stored outcome. Otherwise
 * as svc_db_error: nothing was written. */
void svc_write_error(http_res *res, int rc, const db_conn *c);

/* The answer when the outcome of a write is unknown (svc_write_error). */
void svc_outcome_unknown(http_res *res);

/* Waits for a signal of `set`; returns its number. */
int svc_wait(const sigset_t *set);

/* ---- the skeleton both services share ---- */

/* What every service has, inside its app struct (svc_def.parts says where):
 * filled by svc_run, borrowed by handlers and workers. */
typedef struct svc_parts {
    const char *brokers; /* KAFKA_BROKERS */
    db_pool *db;
    outbox_relay *relay;
    consumer *consumer;
    int idempotency_retention_s;
    auth_key key;         /* identity's public key (svc_def.tokens) */
    auth_cache *tokens;   /* tokens verified lately (TOKEN_CACHE_SLOTS; NULL: none) */
    const char *audience; /* TOKEN_AUDIENCE */
    char origins[512];    /* ALLOWED_ORIGINS, space-separated */
    group *reads;         /* svc_read's readers (NULL: READ_THREADS 0) */
    group_run_fn read;    /* svc_def.read */
    void *app;
} svc_parts;

/* The series every service with tokens has (tokens_verified_total), and
 * those of its groups: the read group and groups[0..n) (up to 7). */
void svc_metrics(const svc_parts *parts, group *const *groups, int n, FILE *out);

/* Who a request acts for: the token's user. */
typedef struct svc_caller {
    auth_claims claims;
    bool via_cookie; /* the browser's cookie, not an Authorization header */
} svc_caller;

/* False, with 415 unsupported_media_type in `res`, when the request has a
 * body that is not application/json (a form another site posts is not). */
bool svc_json_body(http_req *req, http_res *res);

/* False, with 403 cross_origin in `res`, when the request names an Origin
 * that is not one of ALLOWED_ORIGINS, or names none and `required`. A
 * browser sends its page's Origin with every POST: another site's page
 * cannot act through it. */
bool svc_origin_ok(http_req *req, http_res *res, const svc_parts *parts, bool required);

/* For a handler of a service that verifies tokens: fills `who` from the
 * request's token, or answers 401 and returns false. For a request that
 * changes something (`write`), also: the body must be application/json
 * (else 415), and when the cookie carried the identity, the Origin must be
 * one of ALLOWED_ORIGINS (else 403): no cross-site request forgery. */
bool svc_caller_of(http_req *req, http_res *res, const svc_parts *parts, bool write,
                   svc_caller *who);

/* True when `who` may act on `user_id`'s resources: the same user, or an
 * operator when `operator_may` (reads for support). Else answers 403. */
bool svc_may_act_for(http_res *res, const svc_caller *who, const char *user_id, bool operator_may);

/* Answers a read of one row by its key (GET /orders/{id}, GET
 * /accounts/{user_id}) through svc_def.read, which fills item->res.
 * `item` is the service's own struct, malloc'd, with the group_item first;
 * it is freed here or by the group. With READ_THREADS > 0 the request
 * waits suspended, and a reader thread fetches every read waiting with one
 * statement: under load, one round trip to PostgreSQL and one wake-up of
 * the reader for several reads, instead of each HTTP thread's own (the
 * same queue as the group commit, without its gather: a read never waits
 * for company). With 0, the read runs on the HTTP thread, alone. */
void svc_read(svc_parts *parts, http_req *req, http_res *res, group_item *item);

/* Sets `parts` up for svc_read with `read` run on `app`, and starts
 * `threads` readers (0: none, reads run on the HTTP thread) taking up to
 * `max` reads a statement, gathering up to `gather_us` under load. svc_run
 * calls it with READ_THREADS, READ_GROUP_MAX and READ_GATHER_US. Returns
 * -1 when the readers cannot start. */
int svc_read_start(svc_parts *parts, group_run_fn read, void *app, int threads, int max,
                   int gather_us);

/* True when `origin` is one of the allowed origins. */
bool svc_origin_allowed(const svc_parts *parts, const char *origin);

/* A service: what differs between orders and payments. */
typedef struct svc_def {
    const char *name;   /* "orders": logs and messages */
    int port;           /* HTTP_PORT's default */
    const char *db_url; /* the setting that names the database, and its default */
    const char *db_url_default;
    const char *migrations, *migrations_default;  /* setting, default folder */
    const char *spec, *spec_default, *docs_title; /* the OpenAPI document */
    const db_stmt *const *stmt_sets;              /* the service's own; shared ones added */
    const http_route *routes;
    size_t nroutes;
    http_hooks hooks;
    const char *topic; /* consumed, as the consumer group `name`; NULL: a
                        * service without messages (no relay, no consumer) */
    consumer_handle_fn handle;
    void (*after_commit)(void *app); /* may be NULL */
    void (*purge)(void *app);        /* every PURGE_INTERVAL_MS */
    size_t parts;                    /* offsetof(app type, its svc_parts) */
    bool tokens;                     /* verifies identity's tokens: loads its public key */
    group_run_fn read;               /* svc_read's batch (NULL: no svc_read) */
    /* The service's own settings and parts (each may be NULL). `configure`
     * reads settings (< 0: a bad one, logged). `start` runs once the pool
     * and the relay exist, before the consumer and HTTP; `close` is the
     * first step of shutting down (before HTTP stops); `stop` runs once
     * HTTP, the consumer and the purge stopped, before the relay and the
     * pool go. */
    int (*configure)(void *app);
    int (*start)(void *app, const char *db_url);
    void (*close)(void *app);
    void (*stop)(void *app);
} svc_def;

/* Runs a service until SIGTERM or SIGINT: settings, migrations, pool,
 * relay, the service's own parts, consumer, purge, docs, HTTP; then stops
 * them in the reverse order of what uses what. Returns the process's exit
 * status (2: a bad setting). */
int svc_run(const svc_def *def, void *app);

#endif
