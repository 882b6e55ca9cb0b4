/* The payments service: accounts and deposits over HTTP, and the payment of
 * orders from payment.requests, answered on payment.results through the
 * outbox. Settings: see the README's configuration table. */
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
#include "payments/app.h"
#include "payments/store.h"

#include <string.h>

int main(void)
{
    log_init("payments", log_level_parse(cfg_str("LOG_LEVEL", "info")));
    sigset_t signals;
    svc_block_signals(&signals);

    http_config http;
    int64_t consumer_batch, relay_batch, relay_poll_ms, relay_gather_ms, consumer_gather_ms,
        idem_ret, purge_ms;
    if (svc_http_config(&http, 8081) < 0 ||
        cfg_int("CONSUMER_BATCH", 1, 10000, 256, &consumer_batch) < 0 ||
        cfg_int("RELAY_BATCH", 1, 10000, 256, &relay_batch) < 0 ||
        cfg_int("RELAY_POLL_MS", 10, 60000, 500, &relay_poll_ms) < 0 ||
        cfg_int("RELAY_GATHER_MS", 0, 1000, 0, &relay_gather_ms) < 0 ||
        cfg_int("CONSUMER_GATHER_MS", 0, 1000, 5, &consumer_gather_ms) < 0 ||
        cfg_int("IDEMPOTENCY_RETENTION_S", 60, 365 * 86400, 86400, &idem_ret) < 0 ||
        cfg_int("PURGE_INTERVAL_MS", 100, 86400000, 60000, &purge_ms) < 0)
        return 2;
    const char *db_url =
        cfg_str("PAYMENTS_DATABASE_URL", "postgresql://shop@127.0.0.1:54320/payments");
    const char *brokers = cfg_str("KAFKA_BROKERS", "127.0.0.1:9092");
    const char *migrations = cfg_str("PAYMENTS_MIGRATIONS_DIR", "db/payments");
    const char *spec = cfg_str("PAYMENTS_OPENAPI", "api/payments.yaml");
    const char *docs_assets = cfg_str("SWAGGER_UI_DIR", "node_modules/swagger-ui-dist");
    docs api_docs = {0};

    int rc = 1;
    payments_app app = {.idempotency_retention_s = (int)idem_ret};
    http_server *srv = NULL;
    ticker *purge = NULL;
    static const db_stmt *const stmt_sets[] = {payments_stmts, idem_stmts, outbox_stmts,
                                               consumer_stmts, NULL};

    if (svc_migrate(db_url, migrations, &signals) < 0)
        goto done;
    if (!(app.db = svc_db_pool(db_url, stmt_sets)))
        goto done;
    outbox_relay_config relay = {.brokers = brokers,
                                 .client_id = "payments-relay",
                                 .batch = (int)relay_batch,
                                 .poll_ms = (int)relay_poll_ms,
                                 .gather_ms = (int)relay_gather_ms};
    if (!(app.relay = outbox_relay_start(app.db, &relay)))
        goto done;
    consumer_config requests = {.brokers = brokers,
                                .group = "payments",
                                .client_id = "payments",
                                .topic = MSG_TOPIC_REQUESTS,
                                .batch = (int)consumer_batch,
                                .gather_ms = (int)consumer_gather_ms,
                                .handle = payments_handle_requests,
                                .after_commit = payments_after_commit,
                                .app = &app};
    if (!(app.requests = consumer_start(app.db, &requests)))
        goto done;
    if (!(purge = ticker_start((int)purge_ms, payments_purge, &app)))
        goto done;
    if (docs_load(&api_docs, spec, docs_assets, "Shop payments API") < 0)
        goto done;
    /* Sized from the counts, never by hand: a route added to the table
     * without room here would be written past the end. */
    http_route routes[PAYMENTS_NROUTES + DOCS_NROUTES];
    memcpy(routes, payments_routes, PAYMENTS_NROUTES * sizeof *routes);
    docs_routes(&api_docs, routes + PAYMENTS_NROUTES);
    http_hooks hooks = {.ready = payments_ready, .metrics = payments_metrics};
    if (!(srv = http_start(&http, routes, sizeof routes / sizeof *routes, &hooks, &app)))
        goto done;
    log_msg(LOG_INFO, NULL, "payments listening on http://%s:%d", http.host, http.port);

    int sig = svc_wait(&signals);
    log_msg(LOG_INFO, NULL, "stopping on signal %d", sig);
    rc = 0;
done:
    http_stop(srv);
    docs_free(&api_docs);
    ticker_stop(purge);
    consumer_stop(app.requests);
    outbox_relay_stop(app.relay);
    db_pool_free(app.db);
    if (rc == 0)
        log_msg(LOG_INFO, NULL, "stopped");
    return rc;
}
