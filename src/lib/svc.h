/* Start-up and shut-down steps every service takes the same way. */
#ifndef SHOP_SVC_H
#define SHOP_SVC_H

#include "lib/answer.h"
#include "lib/caller.h"
#include "lib/consumer.h"
#include "lib/db.h"
#include "lib/group.h"
#include "lib/http.h"
#include "lib/outbox.h"

#include <signal.h>

/* Blocks SIGTERM and SIGINT in the calling thread (call it before any
 * thread starts, so they all inherit the mask) and fills `set` with them. */
void svc_block_signals(sigset_t *set);

/* Applies the migrations in `lib_dir` (lib's tables: NULL for a service
 * without them), then those in `dir`, to `conninfo` (the value of the
 * setting named `setting`), retrying every second while the database does not
 * answer. Returns 0, -EINTR when a signal of `set` arrived meanwhile,
 * -DB_REFUSED at once when the server turns us away or the string cannot
 * be read (a wrong setting: logged, naming it, for the caller to exit), or
 * -DB_FAILED for a migration that cannot apply. */
int svc_migrate(const char *setting, const char *conninfo, const char *lib_dir, const char *dir,
                const sigset_t *set);

/* /readyz for a service with a database and an outbox relay (NULL: none,
 * no broker to check): fills `checks` and returns true when both the
 * database and the broker answer. */
bool svc_ready(db_pool *db, outbox_relay *relay, json_t *checks);

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
    callers callers;   /* identity's public key (svc_def.tokens), the token
                        * cache (TOKEN_CACHE_SLOTS), ALLOWED_ORIGINS */
    group *reads;      /* svc_read's readers (NULL: READ_THREADS 0) */
    group_run_fn read; /* svc_def.read */
    tracer *traces;    /* OTEL_*: spans to the collector (NULL: tracing off) */
    void *app;
} svc_parts;

/* The series every service with tokens has (tokens_verified_total), and
 * those of its groups: the read group and groups[0..n) (up to 7). */
void svc_metrics(const svc_parts *parts, group *const *groups, int n, FILE *out);

/* One round of a purge (svc_def.purge calls it every PURGE_INTERVAL_MS):
 * `purge` deletes rows older than `max_age_s`, at most a batch of 1,000 a
 * call, each call its own transaction, until a call finds fewer; how many
 * is logged. A failure is logged and counted in `failures`, and the next
 * round tries again. Returns the rows deleted, or the error. */
int svc_purge(svc_parts *parts, int (*purge)(db_conn *c, int max_age_s, int batch), int max_age_s,
              const char *what, _Atomic uint64_t *failures);

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

/* For a svc_def.read batch: one call of `fetch` on a connection of the
 * pool with the keys of its n items, each a string `key` bytes into its
 * item (offsetof(the service's item, its key)); `fetch` fills `rows`, its
 * own. Returns what `fetch` returns (the rows found), or a negative code
 * (err_str) for answer_db_error. */
int svc_read_rows(svc_parts *parts, group_item **items, int n, size_t key,
                  int (*fetch)(db_conn *c, const char *const *keys, int n, void *rows), void *rows);

/* Sets `parts` up for svc_read with `read` run on `app`, and starts
 * `threads` readers (0: none, reads run on the HTTP thread) taking up to
 * `max` reads a statement, gathering up to `gather_us` under load. svc_run
 * calls it with READ_THREADS, READ_GROUP_MAX and READ_GATHER_US. Returns
 * -ENOMEM when the readers cannot start. */
int svc_read_start(svc_parts *parts, group_run_fn read, void *app, int threads, int max,
                   int gather_us);

/* The settings every service names after itself (ORDERS_DATABASE_URL, ...):
 * the first four of its own table, made by SVC_OWN_SETTINGS, in a struct
 * that begins its values. */
typedef struct svc_own {
    int64_t http_port;
    const char *db_url, *migrations, *spec;
} svc_own;

/* The four, for service `prefix` ("ORDERS") on `port`, with its database,
 * migrations and OpenAPI document all named `name` ("orders"); `type` is
 * the service's struct of values, whose member `own` is its svc_own. */
#define SVC_OWN_SETTINGS(type, prefix, port, name)                                                 \
    CFG_I("HTTP_PORT", type, own.http_port, 1, 65535, port, "port to listen on"),                  \
        CFG_S(prefix "_DATABASE_URL", type, own.db_url, "postgresql://shop@127.0.0.1:54320/" name, \
              "libpq connection string of the service's own database"),                            \
        CFG_S(prefix "_MIGRATIONS_DIR", type, own.migrations, "db/" name,                          \
              "SQL migrations applied at start-up"),                                               \
        CFG_S(prefix "_OPENAPI", type, own.spec, "api/" name ".yaml",                              \
              "the OpenAPI document served at /openapi.yaml")

/* A service: what differs between orders and payments. */
typedef struct svc_def {
    const char *name;       /* "orders": logs and messages */
    const char *docs_title; /* the OpenAPI document's page title */
    /* The service's own settings (SVC_OWN_SETTINGS first), read into its
     * struct of values at `values` (offsetof(app type, that struct)) before
     * `configure` runs. */
    const cfg_table *settings;
    size_t values;
    const db_stmt *const *stmt_sets; /* the service's own; shared ones added */
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

/* The settings tables a service reads, NULL-terminated (at most 15):
 * lib's modules', then its own. */
void svc_settings_tables(const svc_def *def, const cfg_table **out);

/* `SERVICE --help` (settings, a line each) or `--settings-tsv` (for
 * scripts/settings.sh): prints and returns 0; any other argument: the
 * usage, 2; none: -1, for the caller to run. */
int svc_help(const svc_def *def, int argc, char **argv, const char *usage);

/* Runs a service until SIGTERM or SIGINT: settings, migrations, pool,
 * relay, the service's own parts, consumer, purge, docs, HTTP; then stops
 * them in the reverse order of what uses what. Returns the process's exit
 * status (2: a bad setting). */
int svc_run(const svc_def *def, void *app);

#endif
