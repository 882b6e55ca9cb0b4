/* libFuzzer: raw HTTP to the payments service's routes (http_target.h). */
#include "lib/db.h"
#include "payments/app.h"
#include "payments/store.h"

#include <signal.h>

#define fuzz_routes payments_routes
#define fuzz_nroutes PAYMENTS_NROUTES
#include "http_target.h"

void *fuzz_app_start(void)
{
    static payments_app app;
    fuzz_key(&app.svc);
    app.svc.db = fuzz_pool("FUZZ_PAYMENTS_DATABASE_URL", "postgresql://shop@127.0.0.1:1/payments",
                           "db/payments", payments_stmts);
    svc_read_start(&app.svc, payments_read_group, &app, 1, 64, 1000); /* as svc_run does */
    return &app;
}
