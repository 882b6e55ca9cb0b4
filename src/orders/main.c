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

#include <errno.h>
#include <stddef.h>

static const cfg_setting orders_settings_list[] = {
    SVC_OWN_SETTINGS(orders_settings, "ORDERS", 8080, "orders"),
    CFG_I("ORDERS_WRITERS", orders_settings, writers, 1, 64, 1,
          "group-commit writers, each one transaction in flight for the POST /orders waiting (one "
          "writer that gathers makes the largest groups)"),
    CFG_I("ORDERS_GROUP_MAX", orders_settings, group_max, 1, 10000, 256,
          "the most orders one group transaction carries"),
    CFG_I("ORDERS_GATHER_US", orders_settings, gather_us, 0, 1000000, 2000,
          "a writer whose last group carried more than one order waits up to this long for more "
          "(0: never); a lone order at light load goes at once"),
    CFG_I("ORDERS_CREATE_DEADLINE_MS", orders_settings, create_deadline_ms, 100, 600000, 10000,
          "a POST /orders is answered within this, created or not (503 not_created); keep it "
          "below the gateway's 30 s"),
    CFG_I("REDRIVE_AFTER_MS", orders_settings, redrive_after_ms, 100, 86400000, 5000,
          "an order still NEW this long gets its payment request published again"),
    CFG_I("REDRIVE_MAX_MS", orders_settings, redrive_max_ms, 100, 86400000, 60000,
          "the re-drive back-off doubles up to this"),
    CFG_I("REDRIVE_CHECK_MS", orders_settings, redrive_check_ms, 50, 3600000, 1000,
          "how often due re-drives are looked for"),
    CFG_I("WS_PING_MS", orders_settings, ws_ping_ms, 100, 3600000, 20000,
          "a WebSocket silent this long is pinged, and dropped after three silent periods"),
    CFG_I("WS_MAX_QUEUE", orders_settings, ws_max_queue, 1, 100000, 256,
          "messages a WebSocket may have waiting; a client further behind is closed (1008)"),
};
static const cfg_table orders_settings_table = CFG_TABLE("orders", orders_settings_list);

static int configure(void *arg)
{
    orders_app *app = arg;
    const orders_settings *s = &app->settings;
    app->create_deadline_ms = (int)s->create_deadline_ms;
    app->writers = (int)s->writers;
    app->group_max = (int)s->group_max;
    app->gather_us = (int)s->gather_us;
    app->redrive_after_ms = (int)s->redrive_after_ms;
    app->redrive_max_ms = (int)s->redrive_max_ms;
    app->redrive_check_ms = (int)s->redrive_check_ms;
    app->ws_queue = (int)s->ws_max_queue;
    app->ws_ping_ms = (int)s->ws_ping_ms;
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
                           .traces = app->svc.traces,
                           .app = app};
    if (!(app->create = group_start(&create)) ||
        !(app->hub = ws_hub_start(app->ws_queue, app->ws_ping_ms)) ||
        !(app->live = live_start(db_url, app->hub, app->svc.traces)) ||
        !(app->gate.rk = kafka_observer_new(app->svc.brokers, "orders-redrive", PAYMENTS_GROUP)) ||
        !(app->redrive = ticker_start(app->redrive_check_ms, orders_redrive, app)))
        return -ENOMEM;
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

int main(int argc, char **argv)
{
    static const db_stmt *const stmts[] = {orders_stmts, NULL};
    static const svc_def def = {
        .name = "orders",
        .docs_title = "Shop orders API",
        .settings = &orders_settings_table,
        .values = offsetof(orders_app, settings),
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
    int help = svc_help(&def, argc, argv, "orders [--help | --settings-tsv]");
    if (help >= 0)
        return help;
    static orders_app app = {.changed_lock = PTHREAD_MUTEX_INITIALIZER};
    return svc_run(&def, &app);
}
