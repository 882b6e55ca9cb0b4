#include "lib/svc.h"
#include "lib/config.h"
#include "lib/db.h"
#include "lib/log.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

int svc_http_config(http_config *cfg, int default_port)
{
    int64_t port, threads, max_body, timeout;
    if (cfg_int("HTTP_PORT", 1, 65535, default_port, &port) < 0 ||
        /* Handlers block on the database: more threads, more commits
         * in flight, and PostgreSQL flushes them together. */
        cfg_int("HTTP_THREADS", 1, 256, 16, &threads) < 0 ||
        cfg_int("HTTP_MAX_BODY", 64, 1 << 24, 16384, &max_body) < 0 ||
        cfg_int("HTTP_IDLE_TIMEOUT_S", 1, 3600, 60, &timeout) < 0)
        return -EINVAL;
    *cfg = (http_config){
        .host = cfg_str("HTTP_HOST", "127.0.0.1"),
        .port = (int)port,
        .threads = (int)threads,
        .max_body = (size_t)max_body,
        .timeout_s = (int)timeout,
    };
    return 0;
}

void svc_block_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int svc_migrate(const char *conninfo, const char *dir, const sigset_t *set)
{
    for (;;) {
        db_pool *pool = db_pool_new(conninfo, 1, NULL);
        int rc = pool ? db_migrate(pool, dir) : -DB_FAILED;
        db_pool_free(pool);
        if (rc != -DB_UNAVAILABLE)
            return rc;
        log_msg(LOG_WARN, NULL, "database unreachable; retrying the migrations in 1 s");
        struct timespec wait = {.tv_sec = 1};
        if (sigtimedwait(set, NULL, &wait) > 0)
            return -EINTR;
    }
}

db_pool *svc_db_pool(const char *conninfo, const db_stmt *const *stmt_sets)
{
    int64_t size, stall, connect, statement;
    if (cfg_int("DB_POOL_SIZE", 2, 256, 24, &size) < 0 ||
        cfg_int("DB_STALL_MS", 0, 3600000, 800, &stall) < 0 ||
        cfg_int("DB_CONNECT_TIMEOUT_MS", 100, 600000, 800, &connect) < 0 ||
        cfg_int("DB_STATEMENT_TIMEOUT_MS", 0, 86400000, 30000, &statement) < 0)
        return NULL;
    db_pool *pool = db_pool_new(conninfo, (int)size, stmt_sets);
    if (!pool)
        return NULL;
    db_pool_guard(pool, (int)stall, (int)connect, (int)statement);
    db_pool_warm(pool);
    return pool;
}

bool svc_ready(db_pool *db, outbox_relay *relay, json_t *checks)
{
    db_conn *c = NULL;
    bool db_ok = db_acquire(db, 500, &c) == 0 && db_exec_sql(c, "SELECT 1") == 0;
    db_release(db, c);
    bool kafka_ok = outbox_relay_broker_ok(relay, 500);
    json_object_set_new(checks, "database", json_string(db_ok ? "ok" : "unreachable"));
    json_object_set_new(checks, "broker", json_string(kafka_ok ? "ok" : "unreachable"));
    return db_ok && kafka_ok;
}

void svc_db_error(http_res *res, int rc)
{
    if (rc == -DB_UNAVAILABLE || rc == -DB_CONFLICT)
        http_error(res, 503, "database_unavailable", "the database cannot be reached; retry");
    else
        http_error(res, 500, "internal", "unexpected database error");
}

int svc_wait(const sigset_t *set)
{
    int sig = 0;
    sigwait(set, &sig);
    return sig;
}
