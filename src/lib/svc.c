#include "lib/svc.h"
#include "lib/clock.h"
#include "lib/config.h"
#include "lib/db.h"
#include "lib/deadletters.h"
#include "lib/docs.h"
#include "lib/file.h"
#include "lib/idem.h"
#include "lib/kafka.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/ticker.h"
#include "lib/trace.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* What svc_run itself reads. */
typedef struct svc_settings {
    const char *log_level;
    int64_t purge_interval_ms, read_threads, read_group_max, read_gather_us;
    const char *lib_migrations;
} svc_settings;

static const cfg_setting svc_settings_list[] = {
    CFG_S("LOG_LEVEL", svc_settings, log_level, "info",
          "debug, info, warn, error; each request is logged at debug, each 5xx at warn"),
    CFG_I("PURGE_INTERVAL_MS", svc_settings, purge_interval_ms, 100, 86400000, 60000,
          "how often the purges run (batches of 1,000 rows)"),
};
/* The grouped reads (svc_read), for a service that has them. */
static const cfg_setting svc_read_settings_list[] = {
    CFG_I("READ_THREADS", svc_settings, read_threads, 0, 64, 1,
          "readers for GET /orders/{id} and GET /accounts/{user_id}, each fetching every such "
          "read waiting with one statement (0: each read on its HTTP thread)"),
    CFG_I("READ_GROUP_MAX", svc_settings, read_group_max, 1, 10000, 64,
          "the most reads one statement fetches"),
    CFG_I("READ_GATHER_US", svc_settings, read_gather_us, 0, 1000000, 1000,
          "a reader whose last statement carried more than one read waits up to this long for "
          "more (0: never)"),
};
static const cfg_table svc_read_settings_table = CFG_TABLE("svc", svc_read_settings_list);
/* The tables lib's modules own, for a service with messages. */
static const cfg_setting svc_lib_settings_list[] = {
    CFG_S("LIB_MIGRATIONS_DIR", svc_settings, lib_migrations, "db/lib",
          "SQL migrations of the tables lib owns (outbox, dead letters, Idempotency-Keys), applied "
          "before the service's own"),
};
static const cfg_table svc_lib_settings_table = CFG_TABLE("svc", svc_lib_settings_list);
static const cfg_table svc_settings_table = CFG_TABLE("svc", svc_settings_list);

void svc_block_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int svc_migrate(const char *setting, const char *conninfo, const char *lib_dir, const char *dir,
                const sigset_t *set)
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
        int rc = pool ? 0 : -DB_FAILED;
        if (rc == 0 && lib_dir)
            rc = db_migrate(pool, lib_dir, "lib");
        if (rc == 0)
            rc = db_migrate(pool, dir, NULL);
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

bool svc_ready(db_pool *db, outbox_relay *relay, json_t *checks)
{
    db_conn *c = NULL;
    bool db_ok = db_acquire(db, 500, &c) == 0 && db_exec_sql(c, "SELECT 1") == 0;
    json_object_set_new(checks, "database", json_string(db_ok ? "ok" : "unreachable"));
    /* Which node: with a cluster, the leader this instance writes to. */
    if (db_ok) {
        char node[160];
        snprintf(node, sizeof node, "%s:%s", PQhost(db_pg(c)), PQport(db_pg(c)));
        json_object_set_new(checks, "database_node", json_string(node));
    }
    db_release(db, c);
    if (!relay) /* a service without messages (identity) */
        return db_ok;
    bool kafka_ok = outbox_relay_broker_ok(relay, 500);
    json_object_set_new(checks, "broker", json_string(kafka_ok ? "ok" : "unreachable"));
    return db_ok && kafka_ok;
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
                          .traces = parts->traces,
                          .app = app};
    if (threads > 0 && !(parts->reads = group_start(&reads)))
        return -ENOMEM;
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

void svc_settings_tables(const svc_def *def, const cfg_table **out)
{
    size_t n = 0;
    out[n++] = &svc_settings_table;
    if (def->read)
        out[n++] = &svc_read_settings_table;
    out[n++] = &http_settings_table;
    out[n++] = &db_settings_table;
    out[n++] = &caller_settings_table;
    if (def->tokens)
        out[n++] = &caller_key_settings_table;
    out[n++] = &docs_settings_table;
    out[n++] = &trace_settings_table;
    if (def->topic) {
        out[n++] = &svc_lib_settings_table;
        out[n++] = &kafka_settings_table;
        out[n++] = &outbox_settings_table;
        out[n++] = &consumer_settings_table;
        out[n++] = &idem_settings_table;
    }
    out[n++] = def->settings;
    out[n] = NULL;
}

int svc_help(const svc_def *def, int argc, char **argv, const char *usage)
{
    if (argc < 2)
        return -1;
    bool tsv = strcmp(argv[1], "--settings-tsv") == 0;
    if (argc != 2 || (!tsv && strcmp(argv[1], "--help") != 0)) {
        fprintf(stderr, "usage: %s\n", usage);
        return 2;
    }
    const cfg_table *tables[16];
    svc_settings_tables(def, tables);
    if (!tsv)
        printf("usage: %s\n\nSettings (environment variables):\n", usage);
    cfg_print_help(stdout, tables, tsv);
    return 0;
}

int svc_run(const svc_def *def, void *app)
{
    svc_settings own_svc = {0};
    /* The log's level first: what follows may log. */
    log_init(def->name, log_level_parse(cfg_str("LOG_LEVEL", svc_settings_list[0].text)));
    sigset_t signals;
    svc_block_signals(&signals);

    svc_parts *parts = (svc_parts *)((char *)app + def->parts);
    void *values = (char *)app + def->values;
    const svc_own *own = values;
    http_settings hs;
    db_settings ds;
    caller_settings cs;
    docs_settings docs_s;
    trace_settings ts;
    outbox_settings os = {0};
    consumer_settings ks = {0};
    idem_settings is = {0};
    int bad = 0;
    /* Every table is read, so that every bad setting is logged at once. */
    bad |= cfg_load(&svc_settings_table, &own_svc) < 0;
    if (def->read)
        bad |= cfg_load(&svc_read_settings_table, &own_svc) < 0;
    if (def->topic)
        bad |= cfg_load(&svc_lib_settings_table, &own_svc) < 0;
    bad |= cfg_load(&http_settings_table, &hs) < 0;
    bad |= cfg_load(&db_settings_table, &ds) < 0;
    bad |= cfg_load(&caller_settings_table, &cs) < 0;
    if (def->tokens)
        bad |= cfg_load(&caller_key_settings_table, &cs) < 0;
    bad |= cfg_load(&docs_settings_table, &docs_s) < 0;
    bad |= cfg_load(&trace_settings_table, &ts) < 0;
    if (def->topic) {
        bad |= kafka_settings_load() < 0;
        bad |= cfg_load(&outbox_settings_table, &os) < 0;
        bad |= cfg_load(&consumer_settings_table, &ks) < 0;
        bad |= cfg_load(&idem_settings_table, &is) < 0;
    }
    bad |= cfg_load(def->settings, values) < 0;
    if (bad || (def->configure && def->configure(app) < 0))
        return 2;
    http_config http = http_config_of(&hs, (int)own->http_port);
    parts->idempotency_retention_s = (int)is.retention_s;
    parts->callers.audience = cs.audience;
    snprintf(parts->callers.origins, sizeof parts->callers.origins, "%s", cs.origins);
    if (def->tokens && callers_load_key(&parts->callers, cs.public_key_file, cs.public_key,
                                        (int)cs.key_wait_s) < 0)
        return 1;
    /* auth_cache_new refuses a size that is not a power of two. */
    if (def->tokens && cs.cache_slots &&
        !(parts->callers.tokens = auth_cache_new((int)cs.cache_slots))) {
        log_msg(LOG_ERROR, NULL,
                "TOKEN_CACHE_SLOTS must be 0 or a power of two (or no memory for the cache)");
        return 2;
    }
    const char *db_url = own->db_url;
    const char *brokers = parts->brokers = kafka_config()->brokers;
    const char *db_url_setting = def->settings->settings[1].name;

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

    if (tracer_start(&ts, def->name, &parts->traces) < 0)
        return 2;
    http.traces = parts->traces;
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
                                 .batch = (int)os.batch,
                                 .poll_ms = (int)os.poll_ms,
                                 .gather_ms = (int)os.gather_ms,
                                 .rounds = (int)os.rounds,
                                 .traces = parts->traces};
    consumer_config cc = {.brokers = brokers,
                          .group = def->name,
                          .client_id = def->name,
                          .topic = def->topic,
                          .batch = (int)ks.batch,
                          .gather_ms = (int)ks.gather_ms,
                          .commit_interval_ms = (int)ks.commit_interval_ms,
                          .handle = def->handle,
                          .after_commit = def->after_commit,
                          .app = app,
                          .traces = parts->traces};

    if (!routes ||
        svc_migrate(db_url_setting, db_url, def->topic ? own_svc.lib_migrations : NULL,
                    own->migrations, &signals) < 0 ||
        !(parts->db = db_pool_open(db_url, sets, &ds)) ||
        (def->topic && !(parts->relay = outbox_relay_start(parts->db, &relay))))
        goto done;
    started = true;
    if ((def->read &&
         svc_read_start(parts, def->read, app, (int)own_svc.read_threads,
                        (int)own_svc.read_group_max, (int)own_svc.read_gather_us) < 0) ||
        (def->start && def->start(app, db_url) < 0) ||
        (def->topic && !(parts->consumer = consumer_start(parts->db, &cc))) ||
        !(purge = ticker_start((int)own_svc.purge_interval_ms, def->purge, app)) ||
        (def->topic && !(gauges = ticker_start(2000, refresh_gauges, parts))) ||
        docs_load(&api_docs, own->spec, docs_s.assets, def->docs_title) < 0)
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
    auth_cache_free(parts->callers.tokens);
    tracer_stop(parts->traces); /* last: the spans of everything above are sent */
    if (rc == 0)
        log_msg(LOG_INFO, NULL, "stopped");
    return rc;
}

int svc_read_rows(svc_parts *parts, group_item **items, int n, size_t key,
                  int (*fetch)(db_conn *c, const char *const *keys, int n, void *rows), void *rows)
{
    const char **keys = calloc((size_t)n, sizeof *keys);
    if (!keys)
        return -ENOMEM;
    for (int i = 0; i < n; i++)
        keys[i] = (const char *)items[i] + key;
    db_conn *c = NULL;
    int rc = db_acquire(parts->db, 1000, &c);
    if (rc == 0)
        rc = fetch(c, keys, n, rows);
    db_release(parts->db, c);
    free(keys);
    return rc;
}

int svc_purge(svc_parts *parts, int (*purge)(db_conn *c, int max_age_s, int batch), int max_age_s,
              const char *what, _Atomic uint64_t *failures)
{
    enum { BATCH = 1000 };
    db_conn *c = NULL;
    int n = db_acquire(parts->db, 1000, &c), purged = 0;
    /* A batch short of BATCH was the last one. */
    for (int got = BATCH; n == 0 && got == BATCH;)
        if ((got = purge(c, max_age_s, BATCH)) < 0)
            n = got;
        else
            purged += got;
    db_release(parts->db, c);
    if (n < 0) {
        atomic_fetch_add(failures, 1);
        log_msg(LOG_WARN, NULL, "purge of %s failed (%s); trying again next time", what,
                err_str(n));
    }
    if (purged)
        log_msg(LOG_INFO, NULL, "purged %d %s", purged, what);
    return n < 0 ? n : purged;
}

void svc_metrics(const svc_parts *parts, group *const *groups, int n, FILE *out)
{
    uint64_t hits, misses;
    auth_cache_counts(parts->callers.tokens, &hits, &misses);
    metrics_header(out, "tokens_verified_total", "counter",
                   "Tokens accepted or refused, by how: a signature checked, or a token "
                   "checked before (TOKEN_CACHE_SLOTS)");
    metrics_sample(out, "tokens_verified_total", "how=\"signature\"", misses);
    metrics_sample(out, "tokens_verified_total", "how=\"cached\"", hits);
    group *all[8] = {parts->reads};
    for (int i = 0; i < n && i + 1 < 8; i++)
        all[i + 1] = groups[i];
    group_metrics(all, n + 1 < 8 ? n + 1 : 8, out);
}
