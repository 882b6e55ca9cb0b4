/* The payments service: accounts and deposits over HTTP, and the payment of
 * orders from payment.requests, answered on payment.results through the
 * outbox. Settings: see the README's configuration table. The start and
 * stop steps are svc_run's (src/lib/svc.c), shared with orders. */
#include "lib/msg.h"
#include "lib/svc.h"
#include "payments/app.h"
#include "payments/store.h"

#include <stddef.h>

static const cfg_setting payments_settings_list[] = {
    SVC_OWN_SETTINGS(payments_settings, "PAYMENTS", 8081, "payments"),
};
static const cfg_table payments_settings_table = CFG_TABLE("payments", payments_settings_list);

int main(int argc, char **argv)
{
    static const db_stmt *const stmts[] = {payments_stmts, NULL};
    static const svc_def def = {
        .name = "payments",
        .docs_title = "Shop payments API",
        .settings = &payments_settings_table,
        .values = offsetof(payments_app, settings),
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
    int help = svc_help(&def, argc, argv, "payments [--help | --settings-tsv]");
    if (help >= 0)
        return help;
    static payments_app app;
    return svc_run(&def, &app);
}
