/* The orders HTTP API: parse, call the store, answer. */
#include "lib/books.h"
#include "lib/config.h"
#include "lib/deadletters.h"
#include "lib/idem.h"
#include "lib/log.h"
#include "lib/outbox.h"
#include "lib/svc.h"
#include "lib/valid.h"
#include "orders/app.h"
#include "orders/create.h"
#include "orders/store.h"

#include <errno.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LIST_DEFAULT 20
#define LIST_MAX 100

static void create_order(http_req *req, http_res *res)
{
    orders_app *app = req->app;
    json_int_t amount = 0;
    caller who;
    const char *user_id = NULL, *description = "";
    if (!caller_of(req, res, &app->svc.callers, true, &who) ||
        http_body_unpack(req, res, "{s?:s, s:I, s?:s}", "user_id", &user_id, "amount", &amount,
                         "description", &description) < 0)
        return;
    /* The order is the caller's; a user_id in the body, if any, must say so. */
    if (user_id && !caller_may_act_for(res, &who, user_id, false))
        return;
    if (!valid_amount(amount)) {
        http_error(res, 400, "invalid_amount",
                   "amount must be an integer number of minor units from 1 to 10^12");
        return;
    }
    json_t *d = json_object_get(req->json, "description");
    if (d && !order_description_valid(description, json_string_length(d))) {
        http_error(res, 400, "invalid_description",
                   "description must be at most 500 characters, without NUL");
        return;
    }
    orders_create(app, req, res, who.claims.sub, amount, description);
}

/* GET /orders/{id}: what svc_read's batch needs of each request. */
typedef struct read_item {
    group_item base; /* first: freed as one block */
    char id[MSG_ORDER_ID_LEN + 1];
    char caller[sizeof((auth_claims *)0)->sub];
    bool operator;
    char req_id[HTTP_REQ_ID_MAX + 1];
} read_item;

static void get_order(http_req *req, http_res *res)
{
    orders_app *app = req->app;
    const char *id = req->params[0];
    caller who;
    if (!caller_of(req, res, &app->svc.callers, false, &who))
        return;
    if (!valid_uuid(id)) {
        http_error(res, 404, "order_not_found", "no order %s", id);
        return;
    }
    read_item *it = calloc(1, sizeof *it);
    if (!it) {
        http_error(res, 500, "internal", "out of memory");
        return;
    }
    snprintf(it->id, sizeof it->id, "%s", id);
    http_tag(&it->base.res, "shop.order_id", id);
    snprintf(it->caller, sizeof it->caller, "%s", who.claims.sub);
    it->operator= who.claims.role == AUTH_OPERATOR;
    snprintf(it->req_id, sizeof it->req_id, "%s", req->req_id ? req->req_id : "");
    svc_read(&app->svc, req, res, &it->base);
}

/* The order as GET /orders/{id} shows it: with its refunds, oldest first. */
static json_t *order_with_refunds(const order *o, const refund *refunds, int n)
{
    json_t *j = order_json(o), *list = json_array();
    for (int i = 0; i < n; i++)
        if (strcmp(refunds[i].order_id, o->id) == 0)
            json_array_append_new(list, refund_json(&refunds[i]));
    json_object_set_new(j, "refunds", list);
    return j;
}

/* What one read batch found: the orders, and the refunds of those with
 * some. */
typedef struct found_orders {
    order *orders;
    refund *refunds;
    int nrefunds;
} found_orders;

static int fetch_orders(db_conn *c, const char *const *ids, int n, void *arg)
{
    found_orders *f = arg;
    int rc = store_orders_get(c, ids, n, f->orders);
    if (rc <= 0)
        return rc;
    /* Their refunds, if any has some: a second statement only then. */
    const char **with = calloc((size_t)rc, sizeof *with);
    int nwith = 0, max = 0;
    for (int k = 0; with && k < rc; k++)
        if (f->orders[k].refund_count > 0) {
            with[nwith++] = f->orders[k].id;
            max += f->orders[k].refund_count;
        }
    if (!with || (max && !(f->refunds = calloc((size_t)max, sizeof *f->refunds))))
        rc = -ENOMEM;
    else if (nwith && (f->nrefunds = store_refunds_of(c, with, nwith, f->refunds, max)) < 0)
        rc = f->nrefunds;
    free(with);
    return rc;
}

void orders_read_group(void *arg, group_item **items, int n)
{
    orders_app *app = arg;
    found_orders f = {.orders = calloc((size_t)n, sizeof *f.orders)};
    int rc = f.orders
                 ? svc_read_rows(&app->svc, items, n, offsetof(read_item, id), fetch_orders, &f)
                 : -ENOMEM;
    order *found = f.orders;
    for (int i = 0; i < n; i++) {
        read_item *it = (read_item *)items[i];
        http_res *res = &it->base.res;
        if (rc < 0) {
            answer_db_error(res, rc);
            continue;
        }
        const order *o = NULL; /* ids are UUIDs in any case; the rows' in lower case */
        for (int k = 0; !o && k < rc; k++)
            if (strcasecmp(found[k].id, it->id) == 0)
                o = &found[k];
        /* Another user's order does not exist for the caller (an operator
         * sees every one). */
        if (o && strcmp(o->user_id, it->caller) != 0) {
            if (!it->operator)
                o = NULL;
            else /* support: on the record, with who */
                log_msg(LOG_INFO, it->req_id[0] ? it->req_id : NULL,
                        "operator %s reads order %s of %s", it->caller, o->id, o->user_id);
        }
        if (o)
            http_json(res, 200, order_with_refunds(o, f.refunds, f.nrefunds));
        else
            http_error(res, 404, "order_not_found", "no order %s", it->id);
    }
    free(f.orders);
    free(f.refunds);
}

static void list_orders(http_req *req, http_res *res)
{
    orders_app *app = req->app;
    const char *user_id = http_query(req, "user_id");
    const char *limit_s = http_query(req, "limit"), *cursor_s = http_query(req, "cursor");
    int64_t limit = LIST_DEFAULT, cursor = 0;
    caller who;
    if (!caller_of(req, res, &app->svc.callers, false, &who))
        return;
    /* The caller's orders, unless an operator asks for someone's. */
    if (user_id && !caller_may_act_for(res, &who, user_id, true))
        return;
    if (!user_id)
        user_id = who.claims.sub;
    if (limit_s && cfg_parse_int(limit_s, 1, LIST_MAX, &limit) < 0) {
        http_error(res, 400, "invalid_limit", "limit must be an integer from 1 to %d", LIST_MAX);
        return;
    }
    if (cursor_s && cfg_parse_int(cursor_s, 1, INT64_MAX, &cursor) < 0) {
        http_error(res, 400, "invalid_cursor", "cursor must be a next_cursor from a listing");
        return;
    }
    order *orders = calloc((size_t)limit + 1, sizeof *orders);
    db_conn *c = NULL;
    int rc = orders ? db_acquire(app->svc.db, 1000, &c) : -DB_FAILED;
    /* One more than asked tells whether a next page exists. */
    if (rc == 0)
        rc = store_order_list(c, user_id, cursor, (int)limit + 1, orders);
    db_release(app->svc.db, c);
    if (rc < 0) {
        answer_db_error(res, rc);
        free(orders);
        return;
    }
    int n = rc > limit ? (int)limit : rc;
    json_t *list = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(list, order_json(&orders[i]));
    json_t *next = json_null();
    if (rc > limit) {
        char s[24];
        snprintf(s, sizeof s, "%" PRId64, orders[n - 1].seq);
        next = json_string(s);
    }
    http_json(res, 200, json_pack("{s:o, s:o}", "orders", list, "next_cursor", next));
    free(orders);
}

/* GET /ws?user_id=U: a WebSocket that receives U's order.updated events. */
static void follow_orders(http_req *req, http_res *res)
{
    orders_app *app = req->app;
    const char *user_id = http_query(req, "user_id");
    caller who;
    if (!caller_of(req, res, &app->svc.callers, false, &who))
        return;
    /* A browser's WebSocket carries the cookie: it must come from our page. */
    const char *origin = http_header(req, "Origin");
    if (origin && !caller_origin_allowed(&app->svc.callers, origin)) {
        http_error(res, 403, "cross_origin", "this WebSocket is for the shop's own page");
        return;
    }
    if (user_id && !caller_may_act_for(res, &who, user_id, false))
        return;
    /* Only the caller's own orders, and only while its token lasts. */
    ws_accept(app->hub, req, res, who.claims.sub, who.claims.exp);
}

/* POST /orders/{id}/cancel: a NEW order's owner asks to cancel it; the
 * wish and its payment.cancel commit together, and payments decides (it
 * gives back what it took): 202 with the order, cancel_requested. Asked
 * again, or already CANCELLED: harmless. Paid: 409 (refund it instead).
 * Another user's order is not found; an operator may cancel for support,
 * on the record. */
static void cancel_order(http_req *req, http_res *res)
{
    orders_app *app = req->app;
    const char *id = req->params[0];
    caller who;
    if (!caller_of(req, res, &app->svc.callers, true, &who))
        return;
    if (!valid_uuid(id)) {
        http_error(res, 404, "order_not_found", "no order %s", id);
        return;
    }
    http_tag(res, "shop.order_id", id);
    order o;
    db_conn *c = NULL;
    int rc = db_acquire(app->svc.db, 1000, &c);
    if (rc == 0)
        rc = store_orders_get(c, &id, 1, &o);
    bool mine = rc == 1 && strcmp(o.user_id, who.claims.sub) == 0;
    if (rc == 1 && !mine && who.claims.role != AUTH_OPERATOR)
        rc = 0; /* another user's order does not exist for the caller */
    if (rc == 1 && order_cancel_rule_for(&o) == ORDER_CANCEL_ASK) {
        if (!mine)
            log_msg(LOG_INFO, req->req_id, "operator %s cancels order %s of %s", who.claims.sub,
                    o.id, o.user_id);
        payment_msg cancel;
        order_cancel_request(&o, &cancel);
        char *payload = msg_encode(&cancel);
        order now;
        char tp[TRACE_PARENT_LEN + 1];
        outbox_traceparent(&req->trace, tp);
        int asked = payload ? store_order_cancel(c, o.id, MSG_TOPIC_REQUESTS, payload, tp, &now)
                            : -DB_FAILED;
        free(payload);
        if (asked < 0)
            answer_write_error(res, asked, c);
        else if (asked == 1)
            o = now;
        else if ((asked = store_orders_get(c, &id, 1, &o)) == 1) /* no longer NEW meanwhile */
            asked = 0;
        else if (asked >= 0)
            asked = -DB_FAILED; /* it was there a moment ago: orders are never deleted */
        rc = asked < 0 ? asked : 1;
    }
    if (rc < 0 && !res->status)
        answer_db_error(res, rc);
    db_release(app->svc.db, c);
    if (rc < 0)
        return;
    if (rc == 0) {
        http_error(res, 404, "order_not_found", "no order %s", id);
        return;
    }
    switch (order_cancel_rule_for(&o)) {
    case ORDER_CANCEL_ASK:
        outbox_relay_wake(app->svc.relay);
        http_json(res, 202, order_json(&o));
        break;
    case ORDER_CANCEL_ALREADY:
        http_json(res, 200, order_json(&o));
        break;
    case ORDER_CANCEL_TOO_LATE:
        http_error(res, 409, "not_cancellable",
                   "order %s is %s: it was paid; ask for a refund instead", o.id, o.status);
        break;
    }
}

/* POST /orders/{id}/refunds: what idem_run's transaction needs. */
typedef struct refund_ask {
    const char *id;
    int64_t amount; /* 0: all that is left */
    caller who;
    int redrive_ms;
} refund_ask;

static int refund_work(db_conn *c, http_req *req, http_res *res, void *arg)
{
    refund_ask *ask = arg;
    order o;
    int rc = store_order_lock(c, ask->id, &o);
    bool mine = rc == 1 && strcmp(o.user_id, ask->who.claims.sub) == 0;
    if (rc < 0)
        return rc;
    if (rc == 0 || (!mine && ask->who.claims.role != AUTH_OPERATOR)) {
        http_error(res, 404, "order_not_found", "no order %s", ask->id);
        return 0;
    }
    int64_t amount = 0;
    switch (order_refund_rule_for(&o, ask->amount, &amount)) {
    case ORDER_REFUND_NOT_PAID:
        http_error(res, 409, "not_refundable", "order %s is %s: only a paid order is refunded",
                   o.id, o.status);
        return 0;
    case ORDER_REFUND_TOO_MUCH:
        http_error(res, 422, "refund_exceeds_payment",
                   "order %s has %" PRId64 " of its %" PRId64 " left to refund", o.id,
                   o.amount - o.refund_reserved, o.amount);
        return 0;
    case ORDER_REFUND_TOO_MANY:
        http_error(res, 422, "too_many_refunds", "order %s has had %d refunds, the most it may",
                   o.id, ORDER_REFUNDS_MAX);
        return 0;
    case ORDER_REFUND_OK:
        break;
    }
    if (!mine)
        log_msg(LOG_INFO, req->req_id, "operator %s refunds %" PRId64 " of order %s of %s",
                ask->who.claims.sub, amount, o.id, o.user_id);
    refund r = {.amount = amount};
    order_new_id(r.id);
    snprintf(r.order_id, sizeof r.order_id, "%s", o.id);
    snprintf(r.user_id, sizeof r.user_id, "%s", o.user_id);
    payment_msg m;
    order_refund_request(&r, &m);
    char *payload = msg_encode(&m), tp[TRACE_PARENT_LEN + 1];
    outbox_traceparent(&req->trace, tp);
    rc = payload ? store_refund_create(c, r.id, o.id, amount, ask->redrive_ms, MSG_TOPIC_REQUESTS,
                                       payload, tp, &r)
                 : -DB_FAILED;
    free(payload);
    if (rc == -ENOENT)
        rc = -DB_FAILED; /* locked a moment ago: orders are never deleted */
    if (rc == 0)
        http_json(res, 202, refund_json(&r));
    return rc;
}

/* POST /orders/{id}/refunds: a paid order's owner asks for some of its
 * money back ({"amount"}), or all that is left ({}): 202 with the refund,
 * PENDING; it is COMPLETED once payments gives it back (GET the order, or
 * follow /ws). A refund moves money, so it needs an Idempotency-Key: a
 * retry with it answers the same refund, never a second one. More than is
 * left: 422. Another user's order is not found; an operator may refund for
 * support, on the record. */
static void refund_order(http_req *req, http_res *res)
{
    orders_app *app = req->app;
    refund_ask ask = {.id = req->params[0], .redrive_ms = app->redrive_after_ms};
    json_int_t amount = 0;
    if (!caller_of(req, res, &app->svc.callers, true, &ask.who))
        return;
    if (!valid_uuid(ask.id)) {
        http_error(res, 404, "order_not_found", "no order %s", ask.id);
        return;
    }
    http_tag(res, "shop.order_id", ask.id);
    if (req->body_len > 0 && http_body_unpack(req, res, "{s?:I}", "amount", &amount) < 0)
        return;
    if (req->body_len > 0 && json_object_get(req->json, "amount") && !valid_amount(amount)) {
        http_error(res, 400, "invalid_amount",
                   "amount must be an integer number of minor units from 1 to 10^12");
        return;
    }
    if (!http_header(req, "Idempotency-Key")) {
        http_error(res, 400, "idempotency_key_required",
                   "a refund moves money: send an Idempotency-Key, and the same one on a retry");
        return;
    }
    ask.amount = amount;
    idem_run(app->svc.db, req, res, ask.who.claims.sub, refund_work, &ask);
    if (res->status == 202)
        outbox_relay_wake(app->svc.relay);
}

static const books_service books = {.db = offsetof(orders_app, svc.db),
                                    .callers = offsetof(orders_app, svc.callers)};

static const deadletter_service dead_letters = {.db = offsetof(orders_app, svc.db),
                                                .callers = offsetof(orders_app, svc.callers),
                                                .handle = orders_handle_results};

const http_route orders_routes[] = {
    {"POST", "/orders", create_order, NULL},
    {"GET", "/orders", list_orders, NULL},
    {"GET", "/orders/{id}", get_order, NULL},
    {"GET", "/ws", follow_orders, NULL},
    {"POST", "/orders/{id}/cancel", cancel_order, NULL},
    {"POST", "/orders/{id}/refunds", refund_order, NULL},
    BOOKS_ROUTE(&books),
    DEADLETTER_ROUTES(&dead_letters),
};
_Static_assert(sizeof orders_routes / sizeof *orders_routes == ORDERS_NROUTES,
               "ORDERS_NROUTES (app.h) must count the routes: main.c sizes its table with it");

bool orders_ready(void *arg, json_t *checks)
{
    orders_app *app = arg;
    return svc_ready(app->svc.db, app->svc.relay, checks);
}
