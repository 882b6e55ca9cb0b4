/* PostgreSQL access: a small connection pool, named prepared statements,
 * transactions, migrations, and reconnection after the server restarts.
 * A connection taken from the pool belongs to one thread until released. */
#ifndef SHOP_DB_H
#define SHOP_DB_H

#include "lib/config.h"
#include "lib/err.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Whether libpq's message for a failed connection says the server turned
 * us away for good (authentication, an unknown role or database, pg_hba)
 * rather than that it could not be reached or is starting. Pure. */
bool db_connect_refused(const char *message);

/* The return code for a failed command's SQLSTATE: -DB_UNAVAILABLE and
 * -DB_CONFLICT for what passes with time (retry), -DB_SYSTEMIC for what
 * an operator must mend and no caller's data can cause, the others for
 * what may be the caller's. `broken`: the connection itself is gone. Pure. */
int db_classify(const char *sqlstate, bool broken);

/* True for the codes of a failure that is not the caller's
 * (-DB_UNAVAILABLE, -DB_CONFLICT, -DB_SYSTEMIC, -DB_REFUSED): retry later,
 * answer 503, never set a message aside for it. (At start-up, -DB_REFUSED
 * is a wrong setting: svc_migrate exits on it.) */
bool db_transient(int rc);

/* The nodes a connection string names: libpq's lists ("host=h1,h2
 * port=p1,p2", or postgresql://h1:p1,h2:p2/db; one port may serve every
 * host). `n` 0 when it names none (libpq's default) or more than
 * DB_MAX_HOSTS, or cannot be parsed (-1). Pure. */
#define DB_MAX_HOSTS 8
typedef struct db_hosts {
    int n;
    char host[DB_MAX_HOSTS][128];
    char port[DB_MAX_HOSTS][8];
} db_hosts;
int db_hosts_parse(const char *conninfo, db_hosts *out);

/* A named statement, prepared on every connection the pool opens. */
typedef struct db_stmt {
    const char *name;
    const char *sql;
} db_stmt;

/* A timestamptz column as the API shows it: UTC, milliseconds, ISO 8601
 * ("2026-11-25T12:11:29.595Z"). For SQL text: DB_TS("created_at"). */
#define DB_TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

typedef struct db_pool db_pool;
typedef struct db_conn db_conn;

/* Creates a pool of up to `size` connections to `conninfo`. Connections are
 * opened lazily, so this succeeds while the database is down. `stmt_sets`
 * is a NULL-terminated list of arrays, each ending with a {NULL, NULL}
 * entry; all are borrowed for the pool's life. */
db_pool *db_pool_new(const char *conninfo, int size, const db_stmt *const *stmt_sets);

/* The pool's settings every service reads. */
typedef struct db_settings {
    int64_t pool_size, stall_ms, connect_timeout_ms, statement_timeout_ms, commit_wait_ms;
} db_settings;
extern const cfg_table db_settings_table;

/* A pool sized and guarded as `s` says (db_pool_guard), its connections
 * opened now. NULL without memory. */
db_pool *db_pool_open(const char *conninfo, const db_stmt *const *stmt_sets, const db_settings *s);
void db_pool_free(db_pool *pool);

/* Bounds every exchange with the server (a pool without this waits as long
 * as libpq does, as migrations should). `connect_ms`: a connection attempt
 * gives up after that. `stall_ms`: a command waiting for its answer gives up
 * (-DB_UNAVAILABLE, the connection closed) when no connection of the pool
 * has heard from the server for that long; from then on every acquire opens
 * a new connection, once per 100 ms at most, until one succeeds. A merely
 * slow command, while others complete, is not cut. `statement_timeout_ms`:
 * the server's statement_timeout (0: the server's own setting). */
void db_pool_guard(db_pool *pool, int stall_ms, int connect_ms, int statement_timeout_ms);

/* Opens every connection now (each connects and prepares its statements),
 * so that the first burst of requests does not pay for it. Returns how many
 * are open; the rest open lazily, as ever. */
int db_pool_warm(db_pool *pool);

/* A connection of its own, outside any pool (a LISTEN needs one), with the
 * statements of `stmt_sets` prepared. NULL when the server cannot be
 * reached. Close with db_conn_close. */
db_conn *db_conn_open(const char *conninfo, const db_stmt *const *stmt_sets);
void db_conn_close(db_conn *conn);

/* The libpq connection underneath, for LISTEN and its socket. Borrowed. */
PGconn *db_pg(db_conn *conn);

/* Takes a live connection, waiting up to `wait_ms` for a free one.
 * Returns 0, or -DB_UNAVAILABLE when the server cannot be reached (fast:
 * it does not wait for the server) or no connection got free in time. */
int db_acquire(db_pool *pool, int wait_ms, db_conn **out);

/* The same, but only a connection that is open already: none is opened
 * again (-DB_UNAVAILABLE instead). For /metrics, which must answer at
 * once: a reopened connection prepares every statement, and a PREPARE
 * waits for the locks its statement will take (behind a migration's DDL,
 * say). */
int db_acquire_open(db_pool *pool, int wait_ms, db_conn **out);

/* Gives the connection back. A connection left inside a transaction is
 * rolled back; a broken one is closed and reopened on next use. NULL-safe. */
void db_release(db_pool *pool, db_conn *conn);

/* Runs a prepared statement. On success returns 0 and, when `out` is not
 * NULL, the result (caller PQclear()s it). Returns -DB_* on failure and
 * logs anything that is not a constraint the caller handles. */
int db_exec(db_conn *conn, const char *stmt, int nparams, const char *const *params,
            PGresult **out);

/* Like db_exec, with per-parameter lengths and formats (1: binary), for
 * bytes that are not text (a bytea column). */
int db_exec_bin(db_conn *conn, const char *stmt, int nparams, const char *const *params,
                const int *lengths, const int *formats, PGresult **out);

/* Runs a statement and returns how many rows it changed, or -DB_*. */
int db_exec_count(db_conn *conn, const char *stmt, int nparams, const char *const *params);

/* Runs a purge statement taking ($1 = max age in seconds, $2 = batch
 * size); returns how many rows it deleted, or -DB_*. */
int db_purge(db_conn *conn, const char *stmt, int max_age_s, int batch);

/* A text literal of a PostgreSQL array, "{...}", built element by element:
 * libpq has no array builder. Elements are quoted and escaped, so any text
 * goes in. */
typedef struct db_array {
    char *text;
    size_t len;
    FILE *out;
    int n;
} db_array;

void db_array_begin(db_array *a);
void db_array_add(db_array *a, const char *element);
void db_array_add_int(db_array *a, int64_t element);
/* Finishes the literal; a->text is then NUL-terminated (free with
 * db_array_free). */
void db_array_end(db_array *a);
void db_array_free(db_array *a);
/* The whole literal of elements[0..n) at once: begin, add each, end. */
void db_array_of(db_array *a, const char *const *elements, int n);

/* Runs plain SQL with no parameters (BEGIN, COMMIT, SET ...). */
int db_exec_sql(db_conn *conn, const char *sql);

int db_begin(db_conn *conn);
/* BEGIN and, in the same round trip, `settings`: "SET LOCAL ..." statements
 * (separated by ';') for this transaction alone, or NULL. */
int db_begin_with(db_conn *conn, const char *settings);
int db_commit(db_conn *conn);
void db_rollback(db_conn *conn);

/* The SQLSTATE of the last failure on this connection ("" if none). */
const char *db_sqlstate(const db_conn *conn);

/* True when the last command on `conn` could have committed (a COMMIT, or a
 * statement run outside a transaction block) and the connection broke
 * before its answer came (the server went away, the stall guard cut it):
 * whether it took effect is unknown. A writer tells its client so, never
 * "not done". NULL-safe. */
bool db_in_doubt(const db_conn *conn);

/* From `deadline_ms` on (clock_now_ms; 0: none), a command still waiting
 * for its answer on `conn` is cancelled on the server: it fails (57014)
 * and rolls back, unless it had finished. A COMMIT is left to finish (a
 * cancelled COMMIT's outcome would be unknown). Cleared when the
 * connection goes back to the pool. */
void db_set_deadline(db_conn *conn, int64_t deadline_ms);

/* Applies the *.sql files of `dir` in name order, each once, each in its
 * own transaction, recorded in schema_migrations by its name, after
 * `prefix` and a slash when not NULL (lib's migrations are "lib/001_...",
 * apart from the service's own). Safe to run from several instances at
 * once (an advisory lock serialises them). Returns 0 or -DB_*. */
int db_migrate(db_pool *pool, const char *dir, const char *prefix);

#endif
