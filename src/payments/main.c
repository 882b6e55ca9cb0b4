/* The payments service: accounts, deposits, and (next) the payment of
 * orders. Settings: see the README's configuration table. */
#include "lib/config.h"
#include "lib/db.h"
#include "lib/http.h"
#include "lib/idem.h"
#include "lib/kafka.h"
#include "lib/log.h"
#include "lib/svc.h"
#include "payments/app.h"
#include "payments/store.h"

int main(void)
{
    log_init("payments", log_level_parse(cfg_str("LOG_LEVEL", "info")));
    sigset_t signals;
    svc_block_signals(&signals);

    http_config http;
    int64_t pool_size;
    if (svc_http_config(&http, 8081) < 0 || cfg_int("DB_POOL_SIZE", 1, 256, 8, &pool_size) < 0)
        return 2;
    const char *db_url =
        cfg_str("PAYMENTS_DATABASE_URL", "postgresql://shop@127.0.0.1:54320/payments");
    const char *brokers = cfg_str("KAFKA_BROKERS", "127.0.0.1:9092");
    const char *migrations = cfg_str("PAYMENTS_MIGRATIONS_DIR", "db/payments");

    int rc = 1;
    payments_app app = {0};
    http_server *srv = NULL;
    static const db_stmt *const stmt_sets[] = {store_stmts, idem_stmts, NULL};

    if (svc_migrate(db_url, migrations, &signals) < 0)
        goto done;
    app.db = db_pool_new(db_url, (int)pool_size, stmt_sets);
    app.producer = kafka_producer_new(brokers, "payments", NULL, NULL);
    if (!app.db || !app.producer)
        goto done;
    http_hooks hooks = {.ready = payments_ready};
    srv = http_start(&http, payments_routes, payments_nroutes, &hooks, &app);
    if (!srv)
        goto done;
    log_msg(LOG_INFO, NULL, "payments listening on http://%s:%d", http.host, http.port);

    int sig = svc_wait(&signals);
    log_msg(LOG_INFO, NULL, "stopping on signal %d", sig);
    rc = 0;
done:
    http_stop(srv);
    kafka_destroy(app.producer);
    db_pool_free(app.db);
    return rc;
}
