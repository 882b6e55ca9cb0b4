#include "lib/db.h"
#include "lib/clock.h"
#include "lib/file.h"
#include "lib/log.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct db_conn {
    PGconn *pg;
    struct db_pool *pool; /* NULL for a connection of its own */
    bool in_tx;
    bool broken;
    /* The command under way could commit (a COMMIT, or a statement outside
     * a transaction block), and `in_doubt`: the connection broke before its
     * answer came, so whether it did is unknown (db_in_doubt). */
    bool may_commit, in_doubt;
    /* db_set_deadline: when a command other than COMMIT is cancelled (0:
     * never), and whether this command's cancel was sent. */
    int64_t deadline_ms;
    bool cancelled;
    /* The server cancelled this COMMIT's wait for its synchronous standby
     * (statement_timeout, a cancel): committed here, not on a second node. */
    bool unreplicated;
    char sqlstate[6];
    int node; /* which of the pool's nodes it is connected to (0: the one) */
    struct db_conn *next_free;
};

struct db_pool {
    char *conninfo;
    /* The nodes conninfo names (a cluster's: db_hosts_parse), and the one
     * that last took a connection: tried first. */
    db_hosts hosts;
    atomic_int preferred;
    const db_stmt *const *stmt_sets;
    pthread_mutex_t lock;
    pthread_cond_t freed;
    db_conn *conns;
    int size;
    db_conn *free_list;
    /* After a failed connect, others fail fast until this time (monotonic
     * ms) instead of each paying for a connection attempt. */
    int64_t retry_after_ms;
    /* The stall guard (db_pool_guard): `stall_ms` 0 when off; the last time
     * any connection heard from the server; set while the server is taken
     * for unreachable, until a connection opens again. */
    int stall_ms, connect_ms, statement_timeout_ms;
    /* How long a statement that could commit waits for its answer from a
     * server that is there (0: as long as it takes): see DB_COMMIT_WAIT_MS. */
    int commit_wait_ms;
    _Atomic int64_t heard_ms[DB_MAX_HOSTS]; /* per node */
    atomic_bool stalled;
    atomic_bool probing; /* one connection asks whether the server is there */
};

db_pool *db_pool_new(const char *conninfo, int size, const db_stmt *const *stmt_sets)
{
    db_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return NULL;
    pool->conninfo = strdup(conninfo);
    pool->conns = calloc((size_t)size, sizeof *pool->conns);
    db_hosts_parse(conninfo, &pool->hosts);
    if (!pool->conninfo || !pool->conns) {
        free(pool->conninfo);
        free(pool->conns);
        free(pool);
        return NULL;
    }
    pool->size = size;
    pool->stmt_sets = stmt_sets;
    pool->connect_ms = 10000;
    for (int i = 0; i < size; i++)
        pool->conns[i].pool = pool;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->freed, NULL);
    for (int i = size - 1; i >= 0; i--) {
        pool->conns[i].next_free = pool->free_list;
        pool->free_list = &pool->conns[i];
    }
    return pool;
}

int db_pool_warm(db_pool *pool)
{
    db_conn **taken = calloc((size_t)pool->size, sizeof *taken);
    int n = 0;
    while (taken && n < pool->size && db_acquire(pool, 0, &taken[n]) == 0)
        n++;
    for (int i = 0; i < n; i++)
        db_release(pool, taken[i]);
    free(taken);
    return n;
}

void db_pool_guard(db_pool *pool, int stall_ms, int connect_ms, int statement_timeout_ms)
{
    pool->stall_ms = stall_ms;
    pool->connect_ms = connect_ms;
    pool->statement_timeout_ms = statement_timeout_ms;
}

void db_pool_free(db_pool *pool)
{
    if (!pool)
        return;
    for (int i = 0; i < pool->size; i++)
        PQfinish(pool->conns[i].pg);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->freed);
    free(pool->conns);
    free(pool->conninfo);
    free(pool);
}

static void note_error(db_conn *c, const PGresult *r)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    snprintf(c->sqlstate, sizeof c->sqlstate, "%s", state ? state : "");
    /* 25006 (read-only transaction): the node was the leader when this
     * connection opened and is a standby now. The connection is dropped, so
     * the next one finds the new leader. */
    if (PQstatus(c->pg) != CONNECTION_OK || strcmp(c->sqlstate, "25006") == 0)
        c->broken = true;
    c->in_doubt = c->broken && c->may_commit;
}

bool db_transient(int rc)
{
    return rc == -DB_UNAVAILABLE || rc == -DB_CONFLICT || rc == -DB_SYSTEMIC || rc == -DB_REFUSED;
}

bool db_connect_refused(const char *m)
{
    /* libpq gives a failed connection no SQLSTATE, only the server's FATAL
     * text (28P01, 28000, 3D000) or its own. "the database system is
     * starting up" (57P03) and "too many clients" (53300) are FATAL too,
     * and pass with time: only these words mean a setting is wrong. */
    static const char *const refused[] = {"no password supplied",
                                          "authentication failed",
                                          "does not exist",
                                          "no pg_hba.conf entry",
                                          "invalid connection option",
                                          "invalid URI",
                                          "invalid integer value",
                                          "missing \"=\"",
                                          "unterminated quoted string",
                                          "invalid sslmode value",
                                          NULL};
    for (int i = 0; refused[i]; i++)
        if (strstr(m, refused[i]))
            return true;
    return false;
}

/* The SQLSTATE classes no one message or request can cause: the statement
 * itself no longer fits the database (42: a function or column renamed by a
 * rolling upgrade, a privilege revoked; 0A: not supported), the server
 * cannot go on (54: a limit, such as a full NOTIFY queue; 55: an object in
 * the wrong state; 58 and XX: disk and internal errors; F0: its
 * configuration), or the session's database or schema is gone (28, 3D,
 * 3F). Setting a message aside for one of these would set aside every
 * message; they are waited out instead. */
static bool systemic(const char *s)
{
    static const char *const classes[] = {"0A", "28", "3D", "3F", "42",
                                          "54", "55", "58", "F0", "XX"};
    for (size_t i = 0; i < sizeof classes / sizeof *classes; i++)
        if (strncmp(s, classes[i], 2) == 0)
            return true;
    return false;
}

int db_classify(const char *s, bool broken)
{
    /* Class 08 (connection), 57P (shutting down, cannot connect now) and 53
     * (out of resources: disk, memory, connections) pass with time; 57014
     * (statement cancelled, a timeout) and 25006 (read-only: a standby
     * during a failover) too. */
    if (broken || s[0] == '\0' || strncmp(s, "08", 2) == 0 || strncmp(s, "57P", 3) == 0 ||
        strncmp(s, "53", 2) == 0 || strcmp(s, "57014") == 0 || strcmp(s, "25006") == 0)
        return -DB_UNAVAILABLE;
    if (strcmp(s, "23505") == 0)
        return -DB_UNIQUE;
    if (strcmp(s, "23514") == 0)
        return -DB_CHECK;
    if (strcmp(s, "22003") == 0)
        return -DB_RANGE;
    /* Serialization failure, deadlock, lock not available: try again. */
    if (strcmp(s, "40001") == 0 || strcmp(s, "40P01") == 0 || strcmp(s, "55P03") == 0)
        return -DB_CONFLICT;
    if (systemic(s))
        return -DB_SYSTEMIC;
    return -DB_FAILED;
}

static int classify(db_conn *c)
{
    return db_classify(c->sqlstate, c->broken);
}

/* A server restart closes idle connections; PostgreSQL says so on the
 * socket. Reading it now spares a request from failing on a dead one. */
static bool conn_alive(db_conn *c)
{
    if (!c->pg || c->broken || PQstatus(c->pg) != CONNECTION_OK)
        return false;
    /* The server's goodbye is a FATAL message, then EOF: read until the
     * socket is quiet, so that the EOF marks the connection bad. */
    struct pollfd p = {.fd = PQsocket(c->pg), .events = POLLIN};
    for (int i = 0; i < 4 && poll(&p, 1, 0) > 0; i++) {
        if (!PQconsumeInput(c->pg) || PQstatus(c->pg) != CONNECTION_OK)
            return false;
        PGnotify *n;
        while ((n = PQnotifies(c->pg)))
            PQfreemem(n);
    }
    return true;
}

/* libpq prints server notices (and the FATAL of a server going away) on
 * stderr; they belong in the JSON log. */
static void on_notice(void *arg, const char *message)
{
    db_conn *c = arg;
    /* The WARNING of a COMMIT whose wait for the synchronous standby was
     * cancelled: "the transaction has already committed locally, but might
     * not have been replicated". db_commit does not call that done. */
    if (c && strstr(message, "canceling wait for synchronous replication"))
        c->unreplicated = true;
    char msg[512];
    snprintf(msg, sizeof msg, "%s", message);
    msg[strcspn(msg, "\n")] = '\0';
    log_msg(strncmp(msg, "NOTICE", 6) == 0 ? LOG_DEBUG : LOG_WARN, NULL, "postgres: %s", msg);
}

/* libpq's connect_timeout counts whole seconds, at least 2, per address:
 * our own loop bounds the whole connection and startup in milliseconds, so
 * that a server that accepts TCP but never answers (a frozen postmaster)
 * costs a request at most `connect_ms`. */
static PGconn *connect_one(const db_pool *pool, const char *host, const char *port, int connect_ms)
{
    /* TCP keepalives and a user timeout find a peer gone while idle or
     * while our data sits unacknowledged; statement_timeout has the server
     * cancel what runs too long (57014, retried). Later keywords override
     * the same ones in the URL. */
    char options[64] = "";
    if (pool->statement_timeout_ms > 0)
        snprintf(options, sizeof options, "-c statement_timeout=%d", pool->statement_timeout_ms);
    /* libpq ignores a keyword whose value is empty: no options, no host
     * of our choosing (the URL's own). */
    const char *keys[] = {"dbname",
                          "connect_timeout",
                          "keepalives",
                          "keepalives_idle",
                          "keepalives_interval",
                          "keepalives_count",
                          "tcp_user_timeout",
                          "options",
                          "host",
                          "port",
                          NULL};
    const char *values[] = {
        pool->conninfo,   "10", "1", "10", "3", "3", "10000", options, host ? host : "",
        port ? port : "", NULL};
    PGconn *pg = PQconnectStartParams(keys, values, 1);
    if (!pg || PQstatus(pg) == CONNECTION_BAD)
        return pg;
    int64_t deadline = clock_now_ms() + connect_ms;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        int64_t left = deadline - clock_now_ms();
        struct pollfd p = {.fd = PQsocket(pg),
                           .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        int ready = left > 0 ? poll(&p, 1, (int)left) : 0;
        if (ready == 0) {
            PQfinish(pg);
            log_msg(LOG_WARN, NULL, "database connection failed: no answer within %d ms",
                    connect_ms);
            return NULL;
        }
        if (ready < 0 && errno != EINTR)
            break;
        st = PQconnectPoll(pg);
    }
    return pg;
}

/* A connection within `connect_ms` to the node conninfo names, or with
 * several (a cluster's: libpq's lists, target_session_attrs=read-write),
 * to the first of them that takes it, `connect_ms` for each: libpq's own
 * walk through the list gives each node whole seconds, so one frozen node
 * at its head would cost every attempt its whole budget. The node that
 * took the last connection is tried first (after a failover, the new
 * leader). NULL when the last one tried did not answer in time. */
static PGconn *connect_within(db_pool *pool, int connect_ms, int *node)
{
    int n = pool->hosts.n;
    *node = 0;
    if (n <= 1)
        return connect_one(pool, NULL, NULL, connect_ms);
    int first = atomic_load(&pool->preferred);
    PGconn *pg = NULL;
    for (int k = 0; k < n; k++) {
        int i = (first + k) % n;
        PQfinish(pg);
        pg = connect_one(pool, pool->hosts.host[i], pool->hosts.port[i], connect_ms);
        if (pg && PQstatus(pg) == CONNECTION_OK) {
            atomic_store(&pool->preferred, i);
            *node = i;
            break;
        }
    }
    return pg;
}

/* A connection to one node of the pool's (the one, with a single server). */
static PGconn *connect_node(db_pool *pool, int node, int connect_ms)
{
    if (pool->hosts.n <= 1)
        return connect_one(pool, NULL, NULL, connect_ms);
    return connect_one(pool, pool->hosts.host[node], pool->hosts.port[node], connect_ms);
}

int db_hosts_parse(const char *conninfo, db_hosts *out)
{
    memset(out, 0, sizeof *out);
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    if (!opts)
        return -1;
    const char *hosts = "", *ports = "";
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0 && o->val)
            hosts = o->val;
        else if (strcmp(o->keyword, "port") == 0 && o->val)
            ports = o->val;
    }
    /* "h1,h2,h3" with "p1,p2,p3", or one port for every host (libpq's rule). */
    int rc = 0;
    const char *h = hosts, *p = ports;
    while (*hosts) {
        size_t hl = strcspn(h, ","), pl = strcspn(p, ",");
        if (out->n == DB_MAX_HOSTS || hl >= sizeof out->host[0] || pl >= sizeof out->port[0]) {
            rc = -1;
            break;
        }
        memcpy(out->host[out->n], h, hl);
        memcpy(out->port[out->n], p, pl);
        out->n++;
        if (!h[hl])
            break;
        h += hl + 1;
        if (p[pl])
            p += pl + 1;
        else
            p = ports; /* one port for all */
    }
    PQconninfoFree(opts);
    if (rc != 0)
        out->n = 0; /* libpq's own walk, then */
    return rc;
}

static int conn_open(db_pool *pool, db_conn *c)
{
    PQfinish(c->pg);
    c->broken = false;
    c->in_tx = false;
    c->pg = connect_within(pool, pool->connect_ms, &c->node);
    if (!c->pg)
        return -DB_UNAVAILABLE;
    if (PQstatus(c->pg) != CONNECTION_OK) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(c->pg));
        msg[strcspn(msg, "\n")] = '\0';
        bool refused = db_connect_refused(msg);
        log_msg(refused ? LOG_ERROR : LOG_WARN, NULL, "database connection failed: %s", msg);
        PQfinish(c->pg);
        c->pg = NULL;
        return refused ? -DB_REFUSED : -DB_UNAVAILABLE;
    }
    PQsetNoticeProcessor(c->pg, on_notice, c);
    for (const db_stmt *const *set = pool->stmt_sets; set && *set; set++) {
        for (const db_stmt *st = *set; st->name; st++) {
            PGresult *r = PQprepare(c->pg, st->name, st->sql, 0, NULL);
            if (PQresultStatus(r) != PGRES_COMMAND_OK) {
                log_msg(LOG_ERROR, NULL, "cannot prepare %s: %s", st->name,
                        PQresultErrorMessage(r));
                PQclear(r);
                PQfinish(c->pg);
                c->pg = NULL;
                /* Unavailable, not fatal: the schema may still be migrating. */
                return -DB_UNAVAILABLE;
            }
            PQclear(r);
        }
    }
    return 0;
}

db_conn *db_conn_open(const char *conninfo, const db_stmt *const *stmt_sets)
{
    db_pool fake = {.conninfo = (char *)conninfo, .stmt_sets = stmt_sets, .connect_ms = 10000};
    db_hosts_parse(conninfo, &fake.hosts);
    db_conn *c = calloc(1, sizeof *c);
    if (c && conn_open(&fake, c) == 0)
        return c;
    free(c);
    return NULL;
}

void db_conn_close(db_conn *c)
{
    if (!c)
        return;
    PQfinish(c->pg);
    free(c);
}

PGconn *db_pg(db_conn *c)
{
    return c->pg;
}

/* db_acquire, or db_acquire_open when !reopen. */
static int acquire(db_pool *pool, int wait_ms, bool reopen, db_conn **out)
{
    *out = NULL;
    int64_t deadline = clock_now_ms() + wait_ms;
    pthread_mutex_lock(&pool->lock);
    while (!pool->free_list) {
        int64_t left = deadline - clock_now_ms();
        if (left <= 0) {
            pthread_mutex_unlock(&pool->lock);
            log_msg(LOG_WARN, NULL, "no database connection free within %d ms", wait_ms);
            return -DB_UNAVAILABLE;
        }
        struct timespec until = clock_deadline(left);
        pthread_cond_timedwait(&pool->freed, &pool->lock, &until);
    }
    db_conn *c = pool->free_list;
    pool->free_list = c->next_free;
    int64_t retry_after_ms = pool->retry_after_ms;
    pthread_mutex_unlock(&pool->lock);

    /* While the server is taken for unreachable, a connection that looks
     * fine may lead to it: open a new one instead (bounded, and not more
     * than one attempt per 100 ms), which also tells when it is back. So
     * too for a connection to a node other than the one that took the
     * last connection: after a failover, the old leader (frozen, maybe). */
    if (!atomic_load(&pool->stalled) && conn_alive(c) &&
        (pool->hosts.n <= 1 || c->node == atomic_load(&pool->preferred))) {
        *out = c;
        return 0;
    }
    int64_t now = clock_now_ms();
    /* Not while backing off after a failed attempt, nor for a caller that
     * must not wait on one (db_acquire_open). */
    bool attempt = reopen && now >= retry_after_ms;
    int rc = attempt ? conn_open(pool, c) : -DB_UNAVAILABLE;
    if (rc == 0) {
        if (atomic_exchange(&pool->stalled, false))
            log_msg(LOG_INFO, NULL, "the database answers again");
        atomic_store(&pool->heard_ms[c->node], clock_now_ms());
        *out = c;
        return 0;
    }
    pthread_mutex_lock(&pool->lock);
    if (attempt)
        pool->retry_after_ms = now + 100;
    c->next_free = pool->free_list;
    pool->free_list = c;
    pthread_cond_signal(&pool->freed);
    pthread_mutex_unlock(&pool->lock);
    return rc;
}

int db_acquire(db_pool *pool, int wait_ms, db_conn **out)
{
    return acquire(pool, wait_ms, true, out);
}

int db_acquire_open(db_pool *pool, int wait_ms, db_conn **out)
{
    return acquire(pool, wait_ms, false, out);
}

void db_release(db_pool *pool, db_conn *c)
{
    if (!c)
        return;
    /* The server's word, not only our flag: a transaction opened by hand,
     * or one a failed command left aborted, must not reach the next user;
     * a connection still busy with a command or in an unknown state is
     * dropped (the pool opens a new one when it is next taken). */
    c->deadline_ms = 0;
    PGTransactionStatusType ts = c->pg ? PQtransactionStatus(c->pg) : PQTRANS_UNKNOWN;
    if (c->in_tx || ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR)
        db_rollback(c);
    if (c->pg && PQtransactionStatus(c->pg) != PQTRANS_IDLE)
        c->broken = true;
    if (c->broken) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    pthread_mutex_lock(&pool->lock);
    c->next_free = pool->free_list;
    pool->free_list = c;
    pthread_cond_signal(&pool->freed);
    pthread_mutex_unlock(&pool->lock);
}

/* True when c's node completes a new connection within `ms`: it is there
 * and merely busy (with a cluster, another node answering says nothing
 * about c's). */
static bool server_answers(db_conn *c, int ms)
{
    PGconn *pg = connect_node(c->pool, c->node, ms);
    bool ok = pg && PQstatus(pg) == CONNECTION_OK;
    PQfinish(pg);
    return ok;
}

/* Past the connection's deadline, asks the server to cancel the command
 * under way, once: it then fails (57014) and rolls back, unless it had
 * finished. A COMMIT is never cancelled: it is not db_set_deadline's to
 * cut (its outcome would be unknown). */
static void cancel_if_late(db_conn *c, int64_t now)
{
    if (!c->deadline_ms || c->cancelled || now < c->deadline_ms || (c->may_commit && c->in_tx))
        return;
    c->cancelled = true;
    PGcancel *cancel = PQgetCancel(c->pg);
    char why[256];
    if (!cancel || !PQcancel(cancel, why, sizeof why))
        log_msg(LOG_WARN, NULL, "cancelling a command past its deadline failed");
    PQfreeCancel(cancel);
}

/* Whether the server says this connection's backend waits for a
 * synchronous standby now (pg_stat_activity's wait event SyncRep), asked
 * on a connection of its own. */
static bool waits_for_standby(db_conn *c)
{
    PGconn *pg = connect_node(c->pool, c->node, c->pool->connect_ms);
    char pid[16];
    snprintf(pid, sizeof pid, "%d", PQbackendPID(c->pg));
    const char *params[] = {pid};
    PGresult *r = pg && PQstatus(pg) == CONNECTION_OK
                      ? PQexecParams(pg,
                                     "SELECT 1 FROM pg_stat_activity WHERE pid = $1::int"
                                     " AND wait_event = 'SyncRep'",
                                     1, NULL, params, NULL, NULL, 0)
                      : NULL;
    bool waits = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    PQclear(r);
    PQfinish(pg);
    return waits;
}

/* Waits for the answer to the command just sent, and returns its last
 * result. Without the stall guard, as long as it takes (PQexec). With it,
 * a wait gives up when the server has been silent to every connection of
 * the pool and does not answer a new one either, `stall_ms` in all (a
 * frozen or unreachable host: the kernel keeps the socket open, so no
 * error would ever come): the connection is closed (the server rolls its
 * transaction back when it sees that) and the call answers
 * -DB_UNAVAILABLE. Silence alone is not enough: commands that all wait on
 * a lock are silent too, with the server well. So after stall_ms / 2 of
 * silence one waiting command opens a connection, with stall_ms / 2 to
 * complete it; if it does, the server counts as heard and every command
 * waits on. A query that is merely slow is left alone; statement_timeout
 * is the server's business. */
static PGresult *await_result(db_conn *c)
{
    db_pool *pool = c->pool;
    bool guarded = pool && pool->stall_ms > 0;
    bool limited = pool && pool->commit_wait_ms > 0 && c->may_commit;
    if (guarded || limited || c->deadline_ms) {
        int64_t start = clock_now_ms(), next_look = 0;
        while (PQisBusy(c->pg)) {
            struct pollfd p = {.fd = PQsocket(c->pg), .events = POLLIN};
            int ready = poll(&p, 1, 50);
            if (ready > 0 && !PQconsumeInput(c->pg))
                break; /* the error is in the result */
            int64_t now = clock_now_ms();
            if (ready > 0 || PQisBusy(c->pg) == 0)
                continue;
            cancel_if_late(c, now);
            if (limited && now - start >= pool->commit_wait_ms && now >= next_look &&
                waits_for_standby(c)) {
                /* A COMMIT waiting this long for a synchronous standby
                 * waits for one that is gone (strict synchronous mode:
                 * docs/decisions.md). Not cancelled: the server would then
                 * call it done on one node. The caller answers "in doubt"
                 * and the server keeps it waiting. One that is merely slow
                 * (its triggers, its locks) is waited for. */
                log_msg(LOG_WARN, NULL,
                        "a commit has waited %d ms for a synchronous standby: in doubt",
                        pool->commit_wait_ms);
                c->broken = true;
                c->in_doubt = true;
                snprintf(c->sqlstate, sizeof c->sqlstate, "08006");
                return NULL;
            }
            if (limited && now - start >= pool->commit_wait_ms && now >= next_look)
                next_look = now + pool->commit_wait_ms; /* slow, not waiting: look again later */
            if (!guarded)
                continue;
            bool gone = atomic_load(&pool->stalled);
            int half = pool->stall_ms / 2;
            if (!gone && now - start >= half &&
                now - atomic_load(&pool->heard_ms[c->node]) >= half &&
                !atomic_exchange(&pool->probing, true)) {
                if (server_answers(c, half)) {
                    atomic_store(&pool->heard_ms[c->node], clock_now_ms());
                } else {
                    gone = true;
                    if (!atomic_exchange(&pool->stalled, true))
                        log_msg(LOG_ERROR, NULL,
                                "the database has not answered for %d ms: taken for unreachable",
                                pool->stall_ms);
                }
                atomic_store(&pool->probing, false);
            }
            if (gone) {
                c->broken = true;
                c->in_doubt = c->may_commit;
                snprintf(c->sqlstate, sizeof c->sqlstate, "08006");
                return NULL;
            }
        }
    }
    PGresult *r, *last = NULL;
    while ((r = PQgetResult(c->pg))) {
        PQclear(last);
        last = r;
    }
    if (pool)
        atomic_store(&pool->heard_ms[c->node], clock_now_ms());
    return last;
}

/* Sends one command without blocking on the answer; NULL when it could not
 * be sent. */
static PGresult *run(db_conn *c, int sent)
{
    c->in_doubt = false;
    c->cancelled = false;
    if (!sent) { /* never reached the server: nothing in doubt */
        c->broken = PQstatus(c->pg) != CONNECTION_OK;
        return NULL;
    }
    return await_result(c);
}

static int finish(db_conn *c, PGresult *r, const char *what, PGresult **out)
{
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        c->sqlstate[0] = '\0';
        if (out)
            *out = r;
        else
            PQclear(r);
        return 0;
    }
    note_error(c, r);
    int rc = classify(c);
    if (rc == -DB_FAILED || rc == -DB_UNAVAILABLE) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(c->pg));
        msg[strcspn(msg, "\n")] = '\0';
        log_msg(rc == -DB_FAILED ? LOG_ERROR : LOG_WARN, NULL, "%s failed (%s): %s", what,
                c->sqlstate, msg);
    }
    PQclear(r);
    return rc;
}

int db_exec(db_conn *c, const char *stmt, int nparams, const char *const *params, PGresult **out)
{
    if (out)
        *out = NULL;
    c->may_commit = !c->in_tx;
    PGresult *r = run(c, PQsendQueryPrepared(c->pg, stmt, nparams, params, NULL, NULL, 0));
    return finish(c, r, stmt, out);
}

int db_exec_count(db_conn *c, const char *stmt, int nparams, const char *const *params)
{
    PGresult *r = NULL;
    int rc = db_exec(c, stmt, nparams, params, &r);
    if (rc == 0)
        rc = atoi(PQcmdTuples(r));
    PQclear(r);
    return rc;
}

int db_purge(db_conn *c, const char *stmt, int max_age_s, int batch)
{
    char age[16], lim[16];
    snprintf(age, sizeof age, "%d", max_age_s);
    snprintf(lim, sizeof lim, "%d", batch);
    const char *params[] = {age, lim};
    return db_exec_count(c, stmt, 2, params);
}

int db_exec_bin(db_conn *c, const char *stmt, int nparams, const char *const *params,
                const int *lengths, const int *formats, PGresult **out)
{
    if (out)
        *out = NULL;
    c->may_commit = !c->in_tx;
    PGresult *r = run(c, PQsendQueryPrepared(c->pg, stmt, nparams, params, lengths, formats, 0));
    return finish(c, r, stmt, out);
}

void db_array_begin(db_array *a)
{
    *a = (db_array){0};
    a->out = open_memstream(&a->text, &a->len);
    fputc('{', a->out);
}

void db_array_add(db_array *a, const char *element)
{
    fputs(a->n++ ? ",\"" : "\"", a->out);
    for (const char *p = element; *p; p++) {
        if (*p == '"' || *p == '\\')
            fputc('\\', a->out);
        fputc(*p, a->out);
    }
    fputc('"', a->out);
}

void db_array_add_int(db_array *a, int64_t element)
{
    fprintf(a->out, "%s%" PRId64, a->n++ ? "," : "", element);
}

void db_array_end(db_array *a)
{
    fputc('}', a->out);
    fclose(a->out);
    a->out = NULL;
}

void db_array_of(db_array *a, const char *const *elements, int n)
{
    db_array_begin(a);
    for (int i = 0; i < n; i++)
        db_array_add(a, elements[i]);
    db_array_end(a);
}

void db_array_free(db_array *a)
{
    if (a->out)
        fclose(a->out);
    free(a->text);
    *a = (db_array){0};
}

/* Runs one SQL text; `may_commit`: whether it could commit (see db_conn). */
static int exec_sql(db_conn *c, const char *sql, bool may_commit)
{
    c->may_commit = may_commit;
    return finish(c, run(c, PQsendQuery(c->pg, sql)), sql, NULL);
}

int db_exec_sql(db_conn *c, const char *sql)
{
    return exec_sql(c, sql, !c->in_tx);
}

int db_begin(db_conn *c)
{
    return db_begin_with(c, NULL);
}

int db_begin_with(db_conn *c, const char *settings)
{
    char sql[512];
    int len = settings ? snprintf(sql, sizeof sql, "BEGIN; %s", settings) : 0;
    if (len < 0 || (size_t)len >= sizeof sql)
        return -DB_FAILED;
    int rc = exec_sql(c, settings ? sql : "BEGIN", false); /* broken, it did nothing */
    c->in_tx = rc == 0;
    return rc;
}

int db_commit(db_conn *c)
{
    /* In the block still while it runs: cancel_if_late leaves it alone. */
    c->unreplicated = false;
    int rc = exec_sql(c, "COMMIT", true);
    c->in_tx = false;
    if (rc == 0 && c->unreplicated) {
        /* On this node only: a failover may lose it, or it may stay. In
         * doubt, as a COMMIT whose answer never came (the caller's retry
         * with its key finds out); the connection goes. */
        log_msg(LOG_WARN, NULL, "a COMMIT did not reach the synchronous standby; in doubt");
        c->in_doubt = true;
        c->broken = true;
        rc = -DB_UNAVAILABLE;
    }
    return rc;
}

bool db_in_doubt(const db_conn *c)
{
    return c && c->in_doubt;
}

void db_set_deadline(db_conn *c, int64_t deadline_ms)
{
    c->deadline_ms = deadline_ms;
}

void db_rollback(db_conn *c)
{
    c->in_tx = false;
    if (!c->broken && c->pg)
        exec_sql(c, "ROLLBACK", false);
}

const char *db_sqlstate(const db_conn *c)
{
    return c->sqlstate;
}

/* ---- migrations ---- */

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int sql_file(const struct dirent *e)
{
    size_t n = strlen(e->d_name);
    return n > 4 && strcmp(e->d_name + n - 4, ".sql") == 0;
}

int db_migrate(db_pool *pool, const char *dir, const char *prefix)
{
    struct dirent **files = NULL;
    int nfiles = scandir(dir, &files, sql_file, by_name);
    if (nfiles < 0) {
        log_msg(LOG_ERROR, NULL, "cannot read migrations in %s: %s", dir, strerror(errno));
        return -DB_FAILED;
    }
    db_conn *c = NULL;
    int rc = db_acquire(pool, 1000, &c);
    if (rc < 0)
        goto done;
    rc = db_exec_sql(c, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                        " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())");
    if (rc == -DB_UNIQUE) /* two instances created it at once: it exists */
        rc = 0;
    for (int i = 0; rc == 0 && i < nfiles; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]->d_name);
        char *sql = file_read(path, NULL);
        if (!sql) {
            log_msg(LOG_ERROR, NULL, "cannot read %s", path);
            rc = -DB_FAILED;
            break;
        }
        char name[512];
        snprintf(name, sizeof name, "%s%s%s", prefix ? prefix : "", prefix ? "/" : "",
                 files[i]->d_name);
        const char *param = name;
        PGresult *r = NULL;
        if ((rc = db_begin(c)) == 0 &&
            (rc = db_exec_sql(c, "SELECT pg_advisory_xact_lock(7265)")) == 0) {
            r = PQexecParams(c->pg, "SELECT 1 FROM schema_migrations WHERE name = $1", 1, NULL,
                             &param, NULL, NULL, 0);
            rc = finish(c, r, "schema_migrations lookup", &r);
        }
        bool applied = rc == 0 && PQntuples(r) > 0;
        PQclear(r);
        if (rc == 0 && !applied) {
            rc = db_exec_sql(c, sql);
            if (rc == 0) {
                r = PQexecParams(c->pg, "INSERT INTO schema_migrations (name) VALUES ($1)", 1, NULL,
                                 &param, NULL, NULL, 0);
                rc = finish(c, r, "schema_migrations insert", NULL);
            }
            if (rc == 0)
                log_msg(LOG_INFO, NULL, "applied migration %s", name);
        }
        rc = rc == 0 ? db_commit(c) : (db_rollback(c), rc);
        free(sql);
    }
done:
    db_release(pool, c);
    for (int i = 0; i < nfiles; i++)
        free(files[i]);
    free(files);
    return rc;
}

static const cfg_setting db_settings_list[] = {
    CFG_I("DB_POOL_SIZE", db_settings, pool_size, 2, 256, 24,
          "database connections per service, all opened at start-up"),
    CFG_I("DB_STALL_MS", db_settings, stall_ms, 0, 3600000, 800,
          "a command waiting for the database gives up (503, connection closed) when no "
          "connection of the pool has heard from the server for this long (0: as long as libpq)"),
    CFG_I("DB_CONNECT_TIMEOUT_MS", db_settings, connect_timeout_ms, 100, 600000, 800,
          "a connection attempt (TCP and start-up) gives up after this"),
    CFG_I("DB_COMMIT_WAIT_MS", db_settings, commit_wait_ms, 0, 3600000, 5000,
          "a COMMIT the server holds this long waiting for a synchronous standby (one that is "
          "gone: strict synchronous replication) is given up: 503 in doubt, the connection "
          "closed, the server keeps it waiting (0: as long as it takes)"),
    CFG_I("DB_STATEMENT_TIMEOUT_MS", db_settings, statement_timeout_ms, 0, 86400000, 30000,
          "the server's statement_timeout for the services' connections (a cancelled statement "
          "is retried or answers 503); TCP keepalives and tcp_user_timeout are set too"),
};
const cfg_table db_settings_table = CFG_TABLE("db", db_settings_list);

db_pool *db_pool_open(const char *conninfo, const db_stmt *const *stmt_sets, const db_settings *s)
{
    db_pool *pool = db_pool_new(conninfo, (int)s->pool_size, stmt_sets);
    if (!pool)
        return NULL;
    db_pool_guard(pool, (int)s->stall_ms, (int)s->connect_timeout_ms, (int)s->statement_timeout_ms);
    pool->commit_wait_ms = (int)s->commit_wait_ms;
    db_pool_warm(pool);
    return pool;
}
