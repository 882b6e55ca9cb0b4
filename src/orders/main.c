/* The orders service: places orders over HTTP, asks payments to pay them
 * through the outbox, and moves them to FINISHED or CANCELLED from
 * payment.results. Settings: see the README's configuration table. The
 * start and stop steps both services share are svc_run's (src/lib/svc.c);
 * here are the orders' own: re-drive, and live status over WebSockets. */
#include "lib/config.h"
#include "lib/kafka.h"
#include "lib/msg.h"
#include "lib/svc.h"
#include "orders/app.h"
#include "orders/create.h"
#include "orders/store.h"

#include <stddef.h>

static int configure(void *arg)
{
    orders_app *app = arg;
    int64_t after, max, check, queue, ping, writers, group_max, gather_us, deadline;
    if (cfg_int("REDRIVE_AFTER_MS", 100, 86400000, 5000, &after) < 0 ||
        cfg_int("REDRIVE_MAX_MS", 100, 86400000, 60000, &max) < 0 ||
        cfg_int("REDRIVE_CHECK_MS", 50, 3600000, 1000, &check) < 0 ||
        cfg_int("WS_MAX_QUEUE", 1, 100000, 256, &queue) < 0 ||
        cfg_int("WS_PING_MS", 100, 3600000, 20000, &ping) < 0 ||
        cfg_int("ORDERS_WRITERS", 1, 64, 1, &writers) < 0 ||
        cfg_int("ORDERS_GROUP_MAX", 1, 10000, 256, &group_max) < 0 ||
        cfg_int("ORDERS_GATHER_US", 0, 1000000, 2000, &gather_us) < 0 ||
        cfg_int("ORDERS_CREATE_DEADLINE_MS", 100, 600000, 10000, &deadline) < 0)
        return -1;
    app->create_deadline_ms = (int)deadline;
    app->writers = (int)writers;
    app->group_max = (int)group_max;
    app->gather_us = (int)gather_us;
    app->redrive_after_ms = (int)after;
    app->redrive_max_ms = (int)max;
    app->redrive_check_ms = (int)check;
    app->ws_queue = (int)queue;
    app->ws_ping_ms = (int)ping;
    return 0;
}

static int start(void *arg, const char *db_url)
{
    orders_app *app = arg;
    group_config create = {.name = "orders",
                           .writers = app->writers,
                           .max = app->group_max,
                           .gather_us = app->gather_us,
                           .deadline_ms = app->create_deadline_ms,
                           .run = orders_create_group,
                           .expire = orders_create_expired,
                           .app = app};
    if (!(app->create = group_start(&create)) ||
        !(app->hub = ws_hub_start(app->ws_queue, app->ws_ping_ms)) ||
        !(app->live = live_start(db_url, app->hub)) ||
        !(app->gate.rk = kafka_observer_new(app->svc.brokers, "orders-redrive", PAYMENTS_GROUP)) ||
        !(app->redrive = ticker_start(app->redrive_check_ms, orders_redrive, app)))
        return -1;
    return 0;
}

/* Before libmicrohttpd stops, which wants no connection suspended and no
 * WebSocket open: the orders waiting for a group commit are committed and
 * answered (later ones get a 503), and the hub's sockets close. The hub
 * stays allocated: HTTP, the consumer (through NOTIFY) and the live
 * listener may still publish to it until stop. */
static void close_sockets(void *arg)
{
    orders_app *app = arg;
    group_stop(app->create);
    ws_hub_close(app->hub);
}

static void stop(void *arg)
{
    orders_app *app = arg;
    ticker_stop(app->redrive);
    kafka_destroy(app->gate.rk);
    live_stop(app->live);
    ws_hub_free(app->hub);
    group_free(app->create);
    live_batch_free(&app->changed); /* the consumer that fills it has stopped */
}

int main(void)
{
    static const db_stmt *const stmts[] = {orders_stmts, NULL};
    static const svc_def def = {
        .name = "orders",
        .port = 8080,
        .db_url = "ORDERS_DATABASE_URL",
        .db_url_default = "postgresql://shop@127.0.0.1:54320/orders",
        .migrations = "ORDERS_MIGRATIONS_DIR",
        .migrations_default = "db/orders",
        .spec = "ORDERS_OPENAPI",
        .spec_default = "api/orders.yaml",
        .docs_title = "Shop orders API",
        .stmt_sets = stmts,
        .routes = orders_routes,
        .nroutes = ORDERS_NROUTES,
        .hooks = {.ready = orders_ready, .metrics = orders_metrics},
        .topic = MSG_TOPIC_RESULTS,
        .handle = orders_handle_results,
        .purge = orders_purge,
        .parts = offsetof(orders_app, svc),
        .tokens = true,
        .read = orders_read_group,
        .configure = configure,
        .start = start,
        .close = close_sockets,
        .stop = stop,
    };
    static orders_app app = {.changed_lock = PTHREAD_MUTEX_INITIALIZER};
    return svc_run(&def, &app);
}
