#include "lib/svc.h"
#include "lib/clock.h"
#include "lib/config.h"
#include "lib/db.h"
#include "lib/deadletters.h"
#include "lib/docs.h"
#include "lib/file.h"
#include "lib/idem.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/ticker.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static int64_t default_threads(void)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    return cores > 2 ? 2 * cores : 4;
}

int svc_http_config(http_config *cfg, int default_port)
{
    int64_t port, threads, max_body, timeout;
    if (cfg_int("HTTP_PORT", 1, 65535, default_port, &port) < 0 ||
        /* Two per core (at least 4): reads and deposits wait on the
         * database in these threads, orders do not (they wait suspended for
         * their group commit). More threads than that only take turns on
         * the cores: on 2 cores, 4 threads read 16 % more than 16 did
         * (bench/README.md). */
        cfg_int("HTTP_THREADS", 1, 256, default_threads(), &threads) < 0 ||
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

int svc_migrate(const char *setting, const char *conninfo, const char *dir, const sigset_t *set)
{
    char *err = NULL;
    PQconninfoOption *parsed = PQconninfoParse(conninfo, &err);
    if (!parsed) {
        log_msg(LOG_ERROR, NULL, "%s cannot be read as a PostgreSQL connection string: %s", setting,
                err ? err : "out of memory");
        PQfreemem(err);
        return -DB_REFUSED;
    }
    PQconninfoFree(parsed);
    for (;;) {
        db_pool *pool = db_pool_new(conninfo, 1, NULL);
        int rc = pool ? db_migrate(pool, dir) : -DB_FAILED;
        db_pool_free(pool);
        if (rc == -DB_REFUSED)
            log_msg(LOG_ERROR, NULL,
                    "the database refused the connection that %s describes (see above: a "
                    "password, role or database name): exiting",
                    setting);
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
    json_object_set_new(checks, "database", json_string(db_ok ? "ok" : "unreachable"));
    if (!relay) /* a service without messages (identity) */
        return db_ok;
    bool kafka_ok = outbox_relay_broker_ok(relay, 500);
    json_object_set_new(checks, "broker", json_string(kafka_ok ? "ok" : "unreachable"));
    return db_ok && kafka_ok;
}

/* The value of cookie `name` in a Cookie header ("a=1; name=v; b=2"),
 * copied into `out`; false when absent or too long. */
static bool cookie_value(const char *header, const char *name, char *out, size_t len)
{
    size_t n = strlen(name);
    for (const char *p = header; p && *p;) {
        p += strspn(p, " \t");
        const char *end = strchr(p, ';');
        size_t item = end ? (size_t)(end - p) : strlen(p);
        if (item > n && strncmp(p, name, n) == 0 && p[n] == '=') {
            size_t vlen = item - n - 1;
            if (vlen == 0 || vlen >= len)
                return false;
            memcpy(out, p + n + 1, vlen);
            out[vlen] = '\0';
            return true;
        }
        p = end ? end + 1 : NULL;
    }
    return false;
}

int svc_authenticate(http_req *req, http_res *res, const auth_key *key, auth_cache *cache,
                     const char *audience, auth_claims *claims, bool *via_cookie)
{
    const char *authz = http_header(req, "Authorization");
    const char *cookies = http_header(req, "Cookie");
    char cookie[AUTH_TOKEN_MAX + 1];
    const char *token = NULL;
    bool from_cookie = false;
    if (authz && strncasecmp(authz, "Bearer ", 7) == 0)
        token = authz + 7;
    else if (cookies && cookie_value(cookies, AUTH_COOKIE, cookie, sizeof cookie))
        token = cookie, from_cookie = true;
    if (via_cookie)
        *via_cookie = from_cookie;
    int rc = token ? auth_verify_cached(cache, key, token, audience, clock_wall_s(), claims)
                   : AUTH_MALFORMED;
    if (rc == AUTH_OK)
        return 0;
    if (!token && !authz)
        http_error(res, 401, "unauthenticated",
                   "sign in: this needs a Bearer token or the session cookie");
    else if (rc == AUTH_EXPIRED)
        http_error(res, 401, "token_expired", "the session has expired: sign in again");
    else
        http_error(res, 401, "invalid_token", "the token was refused: %s", auth_strerror(rc));
    http_add_header(res, "WWW-Authenticate", "Bearer");
    return -1;
}

bool svc_origin_allowed(const svc_parts *parts, const char *origin)
{
    size_t n = strlen(origin);
    for (const char *p = parts->origins; *p;) {
        p += strspn(p, " ");
        size_t len = strcspn(p, " ");
        if (len && len == n && strncmp(p, origin, n) == 0)
            return true;
        p += len;
    }
    return false;
}

bool svc_json_body(http_req *req, http_res *res)
{
    const char *type = http_header(req, "Content-Type");
    if (req->body_len && (!type || strncasecmp(type, "application/json", 16) != 0 ||
                          (type[16] != '\0' && type[16] != ';' && type[16] != ' '))) {
        http_error(res, 415, "unsupported_media_type", "the body must be application/json");
        return false;
    }
    return true;
}

bool svc_origin_ok(http_req *req, http_res *res, const svc_parts *parts, bool required)
{
    const char *origin = http_header(req, "Origin");
    if ((origin || required) && (!origin || !svc_origin_allowed(parts, origin))) {
        http_error(res, 403, "cross_origin", "this request must come from the shop's own page");
        return false;
    }
    return true;
}

bool svc_caller_of(http_req *req, http_res *res, const svc_parts *parts, bool write,
                   svc_caller *who)
{
    if (svc_authenticate(req, res, &parts->key, parts->tokens, parts->audience, &who->claims,
                         &who->via_cookie) < 0)
        return false;
    if (!write)
        return true;
    /* A write carried by the cookie must name the shop's page as its
     * Origin (a browser always sends one with a POST). */
    return svc_json_body(req, res) && (!who->via_cookie || svc_origin_ok(req, res, parts, true));
}

bool svc_may_act_for(http_res *res, const svc_caller *who, const char *user_id, bool operator_may)
{
    if (strcmp(who->claims.sub, user_id) == 0)
        return true;
    if (operator_may && who->claims.role == AUTH_OPERATOR) {
        /* Support reading a user's data: on the record, with who. */
        log_msg(LOG_INFO, NULL, "operator %s reads %s's data", who->claims.sub, user_id);
        return true;
    }
    http_error(res, 403, "forbidden", "this is not your account");
    return false;
}

/* Identity's public key: AUTH_PUBLIC_KEY, else the file identity writes
 * (waited for a while: identity may be starting next to us). */
static int load_public_key(svc_parts *parts)
{
    const char *given = cfg_str("AUTH_PUBLIC_KEY", "");
    const char *file = cfg_str("AUTH_PUBLIC_KEY_FILE", "var/identity-signing.key.pub");
    int64_t wait_s;
    if (cfg_int("AUTH_KEY_WAIT_S", 0, 3600, 30, &wait_s) < 0 || auth_init() < 0)
        return -1;
    if (given[0]) {
        if (auth_key_from_public_text(&parts->key, given) == 0)
            return 0;
        log_msg(LOG_ERROR, NULL, "AUTH_PUBLIC_KEY is not a base64 Ed25519 public key");
        return -1;
    }
    for (int64_t waited = 0;; waited += 100) {
        char *text = file_read(file, NULL);
        if (text) {
            int rc = auth_key_from_public_text(&parts->key, text);
            free(text);
            if (rc == 0)
                return 0;
            log_msg(LOG_ERROR, NULL, "%s does not hold an Ed25519 public key", file);
            return -1;
        }
        if (waited >= wait_s * 1000) {
            log_msg(LOG_ERROR, NULL, "no public key in %s: is identity running?", file);
            return -1;
        }
        struct timespec pause = {.tv_nsec = 100 * 1000000};
        nanosleep(&pause, NULL);
    }
}

void svc_db_error(http_res *res, int rc)
{
    if (rc == -DB_SYSTEMIC) {
        /* Logged where it happened; the same for every caller until an
         * operator mends it (a schema change half done, a privilege). */
        http_error(res, 503, "database_failing",
                   "the database refuses this for every caller now; retry later");
        http_add_header(res, "Retry-After", "5");
    } else if (db_transient(rc)) {
        http_error(res, 503, "database_unavailable", "the database cannot be reached; retry");
        http_add_header(res, "Retry-After", "1");
    } else {
        http_error(res, 500, "internal", "unexpected database error");
    }
}

void svc_outcome_unknown(http_res *res)
{
    http_error(res, 503, "outcome_unknown",
               "the database went away while committing: this may or may not have been "
               "done; retry with the same Idempotency-Key to get its outcome");
    http_add_header(res, "Retry-After", "1");
}

void svc_write_error(http_res *res, int rc, const db_conn *c)
{
    if (db_in_doubt(c))
        svc_outcome_unknown(res);
    else
        svc_db_error(res, rc);
}

void svc_read(svc_parts *parts, http_req *req, http_res *res, group_item *item)
{
    if (parts->reads && group_submit(parts->reads, req, item))
        return;
    /* No readers (READ_THREADS 0), or stopping: read here. */
    item->pending = NULL;
    parts->read(parts->app, &item, 1);
    *res = item->res;
    free(item);
}

int svc_read_start(svc_parts *parts, group_run_fn read, void *app, int threads, int max,
                   int gather_us)
{
    parts->read = read;
    parts->app = app;
    group_config reads = {.name = "reads",
                          .writers = threads,
                          .max = max,
                          .gather_us = gather_us,
                          .run = read,
                          .app = app};
    if (threads > 0 && !(parts->reads = group_start(&reads)))
        return -1;
    return 0;
}

int svc_wait(const sigset_t *set)
{
    int sig = 0;
    sigwait(set, &sig);
    return sig;
}

/* The gauges /metrics shows that cost a round trip to measure (the
 * outbox's count, the consumer's lag): measured here, every 2 s, so that a
 * request's thread never waits for them. */
static void refresh_gauges(void *arg)
{
    svc_parts *parts = arg;
    outbox_relay_refresh(parts->relay);
    consumer_refresh(parts->consumer);
}

int svc_run(const svc_def *def, void *app)
{
    log_init(def->name, log_level_parse(cfg_str("LOG_LEVEL", "info")));
    sigset_t signals;
    svc_block_signals(&signals);

    svc_parts *parts = (svc_parts *)((char *)app + def->parts);
    http_config http;
    int64_t consumer_batch, relay_batch, relay_poll_ms, relay_gather_ms, relay_rounds,
        consumer_gather_ms, commit_interval_ms, idem_ret, purge_ms;
    if (svc_http_config(&http, def->port) < 0 ||
        cfg_int("CONSUMER_BATCH", 1, 10000, 256, &consumer_batch) < 0 ||
        cfg_int("RELAY_BATCH", 1, 10000, 256, &relay_batch) < 0 ||
        cfg_int("RELAY_POLL_MS", 10, 60000, 500, &relay_poll_ms) < 0 ||
        cfg_int("RELAY_GATHER_MS", 0, 1000, 0, &relay_gather_ms) < 0 ||
        cfg_int("RELAY_ROUNDS", 1, 8, 2, &relay_rounds) < 0 ||
        cfg_int("CONSUMER_GATHER_MS", 0, 1000, 5, &consumer_gather_ms) < 0 ||
        cfg_int("CONSUMER_COMMIT_INTERVAL_MS", 0, 60000, 1000, &commit_interval_ms) < 0 ||
        cfg_int("IDEMPOTENCY_RETENTION_S", 60, 365 * 86400, 86400, &idem_ret) < 0 ||
        cfg_int("PURGE_INTERVAL_MS", 100, 86400000, 60000, &purge_ms) < 0 ||
        (def->configure && def->configure(app) < 0))
        return 2;
    parts->idempotency_retention_s = (int)idem_ret;
    parts->audience = cfg_str("TOKEN_AUDIENCE", "shop");
    snprintf(parts->origins, sizeof parts->origins, "%s",
             cfg_str("ALLOWED_ORIGINS", "http://localhost:8000 http://127.0.0.1:8000"));
    int64_t token_cache, read_threads, read_max, read_gather;
    if (cfg_int("TOKEN_CACHE_SLOTS", 0, 1 << 20, 4096, &token_cache) < 0 ||
        cfg_int("READ_THREADS", 0, 64, 1, &read_threads) < 0 ||
        cfg_int("READ_GROUP_MAX", 1, 10000, 64, &read_max) < 0 ||
        cfg_int("READ_GATHER_US", 0, 1000000, 1000, &read_gather) < 0)
        return 2;
    if (def->tokens && load_public_key(parts) < 0)
        return 1;
    /* auth_cache_new refuses a size that is not a power of two. */
    if (def->tokens && token_cache && !(parts->tokens = auth_cache_new((int)token_cache))) {
        log_msg(LOG_ERROR, NULL,
                "TOKEN_CACHE_SLOTS must be 0 or a power of two (or no memory for the cache)");
        return 2;
    }
    const char *db_url = cfg_str(def->db_url, def->db_url_default);
    const char *brokers = parts->brokers = cfg_str("KAFKA_BROKERS", "127.0.0.1:9092");
    const char *migrations = cfg_str(def->migrations, def->migrations_default);
    const char *spec = cfg_str(def->spec, def->spec_default);
    const char *docs_assets = cfg_str("SWAGGER_UI_DIR", "node_modules/swagger-ui-dist");

    /* The service's statements, then those of the parts a service with
     * messages has (Idempotency-Keys, outbox, inbox and dead letters). */
    const db_stmt *sets[16];
    size_t nsets = 0;
    for (const db_stmt *const *set = def->stmt_sets; *set && nsets < 12; set++)
        sets[nsets++] = *set;
    if (def->topic) {
        sets[nsets++] = idem_stmts;
        sets[nsets++] = outbox_stmts;
        sets[nsets++] = consumer_stmts;
        sets[nsets++] = deadletter_stmts;
    }
    sets[nsets] = NULL;

    int rc = 1;
    bool started = false;
    docs api_docs = {0};
    http_server *srv = NULL;
    ticker *purge = NULL, *gauges = NULL;
    http_route *routes = calloc(def->nroutes + DOCS_NROUTES, sizeof *routes);
    char relay_id[64];
    snprintf(relay_id, sizeof relay_id, "%s-relay", def->name);
    outbox_relay_config relay = {.brokers = brokers,
                                 .client_id = relay_id,
                                 .batch = (int)relay_batch,
                                 .poll_ms = (int)relay_poll_ms,
                                 .gather_ms = (int)relay_gather_ms,
                                 .rounds = (int)relay_rounds};
    consumer_config cc = {.brokers = brokers,
                          .group = def->name,
                          .client_id = def->name,
                          .topic = def->topic,
                          .batch = (int)consumer_batch,
                          .gather_ms = (int)consumer_gather_ms,
                          .commit_interval_ms = (int)commit_interval_ms,
                          .handle = def->handle,
                          .after_commit = def->after_commit,
                          .app = app};

    if (!routes || svc_migrate(def->db_url, db_url, migrations, &signals) < 0 ||
        !(parts->db = svc_db_pool(db_url, sets)) ||
        (def->topic && !(parts->relay = outbox_relay_start(parts->db, &relay))))
        goto done;
    started = true;
    if ((def->read && svc_read_start(parts, def->read, app, (int)read_threads, (int)read_max,
                                     (int)read_gather) < 0) ||
        (def->start && def->start(app, db_url) < 0) ||
        (def->topic && !(parts->consumer = consumer_start(parts->db, &cc))) ||
        !(purge = ticker_start((int)purge_ms, def->purge, app)) ||
        (def->topic && !(gauges = ticker_start(2000, refresh_gauges, parts))) ||
        docs_load(&api_docs, spec, docs_assets, def->docs_title) < 0)
        goto done;
    memcpy(routes, def->routes, def->nroutes * sizeof *routes);
    docs_routes(&api_docs, routes + def->nroutes);
    if (!(srv = http_start(&http, routes, def->nroutes + DOCS_NROUTES, &def->hooks, app)))
        goto done;
    log_msg(LOG_INFO, NULL, "%s listening on http://%s:%d", def->name, http.host, http.port);

    int sig = svc_wait(&signals);
    log_msg(LOG_INFO, NULL, "stopping on signal %d", sig);
    rc = 0;
done:
    /* In dependency order: each part stops before what it uses goes away.
     * The service's `close` first (orders closes its WebSockets, which
     * libmicrohttpd wants closed before it stops), then no new request,
     * no new batch, no purge; then the service's own parts (orders' live
     * listener and hub, used by the consumer until here); the relay and
     * the pool last, as everything above uses them. */
    if (started && def->close)
        def->close(app);
    group_stop(parts->reads); /* the reads waiting are answered */
    http_stop(srv);
    ticker_stop(purge);
    ticker_stop(gauges);
    consumer_stop(parts->consumer);
    if (started && def->stop)
        def->stop(app);
    group_free(parts->reads);
    docs_free(&api_docs);
    free(routes);
    outbox_relay_stop(parts->relay);
    db_pool_free(parts->db);
    auth_cache_free(parts->tokens);
    if (rc == 0)
        log_msg(LOG_INFO, NULL, "stopped");
    return rc;
}

void svc_metrics(const svc_parts *parts, group *const *groups, int n, FILE *out)
{
    uint64_t hits, misses;
    auth_cache_counts(parts->tokens, &hits, &misses);
    metrics_header(out, "tokens_verified_total", "counter",
                   "Tokens accepted or refused, by how: a signature checked, or a token "
                   "checked before (TOKEN_CACHE_SLOTS)");
    fprintf(out, "tokens_verified_total{how=\"signature\"} %" PRIu64 "\n", misses);
    fprintf(out, "tokens_verified_total{how=\"cached\"} %" PRIu64 "\n", hits);
    group *all[8] = {parts->reads};
    for (int i = 0; i < n && i + 1 < 8; i++)
        all[i + 1] = groups[i];
    group_metrics(all, n + 1 < 8 ? n + 1 : 8, out);
}
