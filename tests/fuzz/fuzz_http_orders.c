/* libFuzzer: raw HTTP to the orders service's routes (http_target.h). */
#include "lib/db.h"
#include "lib/ws.h"
#include "orders/app.h"
#include "orders/create.h"
#include "orders/store.h"

#include <signal.h>

#define fuzz_routes orders_routes
#define fuzz_nroutes ORDERS_NROUTES
#include "http_target.h"

void *fuzz_app_start(void)
{
    static orders_app app = {.changed_lock = PTHREAD_MUTEX_INITIALIZER};
    fuzz_key(&app.svc);
    app.svc.db = fuzz_pool("FUZZ_ORDERS_DATABASE_URL", "postgresql://shop@127.0.0.1:1/orders",
                           "db/orders", orders_stmts);
    app.hub = ws_hub_start(16, 60000);
    app.redrive_after_ms = 5000;
    group_config create = {
        .name = "orders", .writers = 1, .max = 64, .run = orders_create_group, .app = &app};
    app.create = group_start(&create);
    svc_read_start(&app.svc, orders_read_group, &app, 1, 64, 1000); /* as svc_run does */
    return &app;
}
