/* The orders service: places orders over HTTP, asks payments to pay them
 * through the outbox, and moves them to FINISHED or CANCELLED from
 * payment.results. Settings: see the README's configuration table. */
#include "lib/config.h"
#include "lib/consumer.h"
#include "lib/db.h"
#include "lib/docs.h"
#include "lib/http.h"
#include "lib/idem.h"
#include "lib/log.h"
#include "lib/msg.h"
#include "lib/outbox.h"
#include "lib/svc.h"
#include "lib/ticker.h"
#include "orders/app.h"
#include "orders/store.h"

#include <string.h>

int main(void)
{
    log_init("orders", log_level_parse(cfg_str("LOG_LEVEL", "info")));
    sigset_t signals;
    svc_block_signals(&signals);

    http_config http;
    int64_t consumer_batch, relay_batch, relay_poll_ms, relay_gather_ms, consumer_gather_ms,
        idem_ret, purge_ms;
    int64_t redrive_after, redrive_max, redrive_check;
    if (svc_http_config(&http, 8080) < 0 ||
        cfg_int("CONSUMER_BATCH", 1, 10000, 256, &consumer_batch) < 0 ||
        cfg_int("RELAY_BATCH", 1, 10000, 256, &relay_batch) < 0 ||
        cfg_int("RELAY_POLL_MS", 10, 60000, 500, &relay_poll_ms) < 0 ||
        cfg_int("RELAY_GATHER_MS", 0, 1000, 0, &relay_gather_ms) < 0 ||
        cfg_int("CONSUMER_GATHER_MS", 0, 1000, 5, &consumer_gather_ms) < 0 ||
        cfg_int("REDRIVE_AFTER_MS", 100, 86400000, 5000, &redrive_after) < 0 ||
        cfg_int("REDRIVE_MAX_MS", 100, 86400000, 60000, &redrive_max) < 0 ||
        cfg_int("REDRIVE_CHECK_MS", 50, 3600000, 1000, &redrive_check) < 0 ||
        cfg_int("IDEMPOTENCY_RETENTION_S", 60, 365 * 86400, 86400, &idem_ret) < 0 ||
        cfg_int("PURGE_INTERVAL_MS", 100, 86400000, 60000, &purge_ms) < 0)
        return 2;
    const char *db_url = cfg_str("ORDERS_DATABASE_URL", "postgresql://shop@127.0.0.1:54320/orders");
    const char *brokers = cfg_str("KAFKA_BROKERS", "127.0.0.1:9092");
    const char *migrations = cfg_str("ORDERS_MIGRATIONS_DIR", "db/orders");
    const char *spec = cfg_str("ORDERS_OPENAPI", "api/orders.yaml");
    const char *docs_assets = cfg_str("SWAGGER_UI_DIR", "node_modules/swagger-ui-dist");
    int64_t ws_queue, ws_ping_ms;
    if (cfg_int("WS_MAX_QUEUE", 1, 100000, 256, &ws_queue) < 0 ||
        cfg_int("WS_PING_MS", 100, 3600000, 20000, &ws_ping_ms) < 0)
        return 2;
    docs api_docs = {0};

    int rc = 1;
    orders_app app = {.redrive_after_ms = (int)redrive_after,
                      .redrive_max_ms = (int)redrive_max,
                      .idempotency_retention_s = (int)idem_ret};
    http_server *srv = NULL;
    ticker *redrive = NULL, *purge = NULL;
    static const db_stmt *const stmt_sets[] = {orders_stmts, idem_stmts, outbox_stmts,
                                               consumer_stmts, NULL};

    if (svc_migrate(db_url, migrations, &signals) < 0)
        goto done;
    if (!(app.db = svc_db_pool(db_url, stmt_sets)))
        goto done;
    outbox_relay_config relay = {.brokers = brokers,
                                 .client_id = "orders-relay",
                                 .batch = (int)relay_batch,
                                 .poll_ms = (int)relay_poll_ms,
                                 .gather_ms = (int)relay_gather_ms};
    if (!(app.relay = outbox_relay_start(app.db, &relay)))
        goto done;
    consumer_config results = {.brokers = brokers,
                               .group = "orders",
                               .client_id = "orders",
                               .topic = MSG_TOPIC_RESULTS,
                               .batch = (int)consumer_batch,
                               .gather_ms = (int)consumer_gather_ms,
                               .handle = orders_handle_results,
                               .app = &app};
    if (!(app.hub = ws_hub_start((int)ws_queue, (int)ws_ping_ms)) ||
        !(app.live = live_start(db_url, app.hub)))
        goto done;
    if (!(app.results = consumer_start(app.db, &results)))
        goto done;
    if (!(redrive = ticker_start((int)redrive_check, orders_redrive, &app)) ||
        !(purge = ticker_start((int)purge_ms, orders_purge, &app)))
        goto done;
    if (docs_load(&api_docs, spec, docs_assets, "Shop orders API") < 0)
        goto done;
    /* Sized from the counts, never by hand: a route added to the table
     * without room here would be written past the end. */
    http_route routes[ORDERS_NROUTES + DOCS_NROUTES];
    memcpy(routes, orders_routes, ORDERS_NROUTES * sizeof *routes);
    docs_routes(&api_docs, routes + ORDERS_NROUTES);
    http_hooks hooks = {.ready = orders_ready, .metrics = orders_metrics};
    if (!(srv = http_start(&http, routes, sizeof routes / sizeof *routes, &hooks, &app)))
        goto done;
    log_msg(LOG_INFO, NULL, "orders listening on http://%s:%d", http.host, http.port);

    int sig = svc_wait(&signals);
    log_msg(LOG_INFO, NULL, "stopping on signal %d", sig);
    rc = 0;
done:
    /* In dependency order: each part stops before what it uses goes away.
     * The hub's sockets close first (libmicrohttpd wants them closed), but
     * the hub itself stays allocated until the last thread that publishes
     * to it (HTTP, the consumer through NOTIFY, the live listener) is gone;
     * the consumer stops before the batch it fills is freed. */
    ws_hub_close(app.hub);
    http_stop(srv);
    ticker_stop(redrive);
    ticker_stop(purge);
    consumer_stop(app.results);
    live_stop(app.live);
    ws_hub_free(app.hub);
    live_batch_free(&app.changed);
    docs_free(&api_docs);
    outbox_relay_stop(app.relay);
    db_pool_free(app.db);
    if (rc == 0)
        log_msg(LOG_INFO, NULL, "stopped");
    return rc;
}
