/* The payments service: accounts and deposits over HTTP, and the payment of
 * orders from payment.requests, answered on payment.results through the
 * outbox. Settings: see the README's configuration table. The start and
 * stop steps are svc_run's (src/lib/svc.c), shared with orders. */
#include "lib/msg.h"
#include "lib/svc.h"
#include "payments/app.h"
#include "payments/store.h"

#include <stddef.h>

int main(void)
{
    static const db_stmt *const stmts[] = {payments_stmts, NULL};
    static const svc_def def = {
        .name = "payments",
        .port = 8081,
        .db_url = "PAYMENTS_DATABASE_URL",
        .db_url_default = "postgresql://shop@127.0.0.1:54320/payments",
        .migrations = "PAYMENTS_MIGRATIONS_DIR",
        .migrations_default = "db/payments",
        .spec = "PAYMENTS_OPENAPI",
        .spec_default = "api/payments.yaml",
        .docs_title = "Shop payments API",
        .stmt_sets = stmts,
        .routes = payments_routes,
        .nroutes = PAYMENTS_NROUTES,
        .hooks = {.ready = payments_ready, .metrics = payments_metrics},
        .topic = MSG_TOPIC_REQUESTS,
        .handle = payments_handle_requests,
        .after_commit = payments_after_commit,
        .purge = payments_purge,
        .parts = offsetof(payments_app, svc),
        .tokens = true,
        .read = payments_read_group,
    };
    static payments_app app;
    return svc_run(&def, &app);
}
