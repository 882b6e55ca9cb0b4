/* The payments HTTP API: parse, call the store, answer. */
#include "lib/books.h"
#include "lib/deadletters.h"
#include "lib/idem.h"
#include "lib/svc.h"
#include "lib/valid.h"
#include "payments/app.h"
#include "payments/store.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static json_t *account_json(const account *a)
{
    return json_pack("{s:s, s:I, s:s, s:s}", "user_id", a->user_id, "balance",
                     (json_int_t)a->balance, "created_at", a->created_at, "updated_at",
                     a->updated_at);
}

/* The one place where the store's outcomes become HTTP answers. Returns 0
 * when `res` holds an answer to commit with, or `rc` to roll back. */
static int answer(http_res *res, int rc, int ok_status, const account *a, const char *user_id)
{
    switch (rc) {
    case 0:
        http_json(res, ok_status, account_json(a));
        return 0;
    case -ENOENT:
        http_error(res, 404, "account_not_found", "no account for user %s", user_id);
        return 0;
    case -EEXIST:
        http_error(res, 409, "account_exists", "user %s already has an account", user_id);
        return 0;
    case -ERANGE:
        http_error(res, 409, "balance_overflow", "the balance would exceed its maximum");
        return 0;
    default:
        return rc; /* idem_run answers 503 or 500 */
    }
}

static int create_account_tx(db_conn *c, http_req *req, http_res *res, void *arg)
{
    const char *user_id = arg;
    (void)req;
    account a;
    /* (the caller's own id: see create_account) */
    return answer(res, store_account_create(c, user_id, &a), 201, &a, user_id);
}

static void create_account(http_req *req, http_res *res)
{
    payments_app *app = req->app;
    const char *user_id = NULL;
    caller who;
    if (!caller_of(req, res, &app->svc.callers, true, &who))
        return;
    /* The caller's account; a user_id in the body, if any, must say so. */
    if (req->body_len && (http_body_unpack(req, res, "{s?:s}", "user_id", &user_id) < 0 ||
                          (user_id && !caller_may_act_for(res, &who, user_id, false))))
        return;
    idem_run(app->svc.db, req, res, who.claims.sub, create_account_tx, who.claims.sub);
}

/* GET /accounts/{user_id}: what svc_read's batch needs of each request
 * (whether the caller may read it is decided before). */
typedef struct read_item {
    group_item base; /* first: freed as one block */
    char user_id[VALID_USER_ID_MAX + 1];
} read_item;

static void get_account(http_req *req, http_res *res)
{
    payments_app *app = req->app;
    const char *user_id = req->params[0];
    caller who;
    if (!caller_of(req, res, &app->svc.callers, false, &who) ||
        !caller_may_act_for(res, &who, user_id, true))
        return;
    read_item *it = calloc(1, sizeof *it);
    if (!it) {
        http_error(res, 500, "internal", "out of memory");
        return;
    }
    snprintf(it->user_id, sizeof it->user_id, "%s", user_id);
    svc_read(&app->svc, req, res, &it->base);
}

static int fetch_accounts(db_conn *c, const char *const *user_ids, int n, void *found)
{
    return store_accounts_get(c, user_ids, n, found);
}

void payments_read_group(void *arg, group_item **items, int n)
{
    payments_app *app = arg;
    account *found = calloc((size_t)n, sizeof *found);
    int rc = found ? svc_read_rows(&app->svc, items, n, offsetof(read_item, user_id),
                                   fetch_accounts, found)
                   : -ENOMEM;
    for (int i = 0; i < n; i++) {
        read_item *it = (read_item *)items[i];
        const account *a = NULL;
        for (int k = 0; !a && k < rc; k++)
            if (strcmp(found[k].user_id, it->user_id) == 0)
                a = &found[k];
        if (answer(&it->base.res, rc < 0 ? rc : a ? 0 : -ENOENT, 200, a, it->user_id) < 0)
            answer_db_error(&it->base.res, rc);
    }
    free(found);
}

typedef struct deposit_args {
    const char *user_id;
    int64_t amount;
} deposit_args;

static int deposit_tx(db_conn *c, http_req *req, http_res *res, void *arg)
{
    deposit_args *d = arg;
    (void)req;
    account a;
    return answer(res, store_deposit(c, d->user_id, d->amount, &a), 201, &a, d->user_id);
}

static void deposit(http_req *req, http_res *res)
{
    payments_app *app = req->app;
    json_int_t amount = 0;
    deposit_args d = {.user_id = req->params[0]};
    caller who;
    if (!caller_of(req, res, &app->svc.callers, true, &who) ||
        !caller_may_act_for(res, &who, d.user_id, false) ||
        http_body_unpack(req, res, "{s:I}", "amount", &amount) < 0)
        return;
    if (!valid_amount(amount)) {
        http_error(res, 400, "invalid_amount",
                   "amount must be an integer number of minor units from 1 to 10^12");
        return;
    }
    d.amount = amount;
    idem_run(app->svc.db, req, res, who.claims.sub, deposit_tx, &d);
}

static const books_service books = {.db = offsetof(payments_app, svc.db),
                                    .callers = offsetof(payments_app, svc.callers)};

static const deadletter_service dead_letters = {.db = offsetof(payments_app, svc.db),
                                                .callers = offsetof(payments_app, svc.callers),
                                                .handle = payments_handle_requests,
                                                .after_commit = payments_after_commit};

const http_route payments_routes[] = {
    {"POST", "/accounts", create_account, NULL},
    {"GET", "/accounts/{user_id}", get_account, NULL},
    {"POST", "/accounts/{user_id}/deposits", deposit, NULL},
    BOOKS_ROUTE(&books),
    DEADLETTER_ROUTES(&dead_letters),
};
_Static_assert(sizeof payments_routes / sizeof *payments_routes == PAYMENTS_NROUTES,
               "PAYMENTS_NROUTES (app.h) must count the routes: main.c sizes its table with it");

bool payments_ready(void *arg, json_t *checks)
{
    payments_app *app = arg;
    return svc_ready(app->svc.db, app->svc.relay, checks);
}
