#include "orders/create.h"
#include "lib/clock.h"
#include "lib/idem.h"
#include "lib/log.h"
#include "lib/svc.h"
#include "orders/store.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef struct order_item {
    group_item base; /* first: the group frees the item as one block */
    order o;
    bool todo;                      /* this item inserts its order */
    int leader;                     /* the first item of the group with its key */
    char key[HTTP_IDEM_SCOPED_MAX]; /* "" without an Idempotency-Key */
    char fingerprint[];             /* idem_fingerprint, when keyed */
} order_item;

void orders_create(orders_app *app, http_req *req, http_res *res, const char *user_id,
                   int64_t amount, const char *description)
{
    char key[HTTP_IDEM_SCOPED_MAX];
    int keyed = idem_scoped_key(req, res, user_id, key);
    if (keyed < 0)
        return;
    char *fp = keyed ? idem_fingerprint(req) : NULL;
    size_t fp_size = fp ? strlen(fp) + 1 : 0;
    order_item *it = keyed && !fp ? NULL : calloc(1, sizeof *it + fp_size);
    if (!it) {
        free(fp);
        http_error(res, 500, "internal", "out of memory");
        return;
    }
    order_new_id(it->o.id);
    http_tag(&it->base.res, "shop.order_id", it->o.id); /* the order it makes */
    snprintf(it->o.user_id, sizeof it->o.user_id, "%s", user_id);
    snprintf(it->o.description, sizeof it->o.description, "%s", description);
    it->o.amount = amount;
    if (keyed) {
        memcpy(it->key, key, sizeof key);
        memcpy(it->fingerprint, fp, fp_size);
    }
    free(fp);
    if (!group_submit(app->create, req, &it->base)) {
        free(it);
        http_error(res, 503, "shutting_down", "the service is stopping; retry");
    }
}

/* A second request with a key the group already has gets the first one's
 * answer, or a 422 when it is another request: as if it had come just
 * after the first one committed. */
static void answer_as_leader(order_item *it, const order_item *leader)
{
    http_res *res = &it->base.res;
    const http_res *first = &leader->base.res;
    if (strcmp(it->fingerprint, leader->fingerprint) != 0) {
        http_error(res, 422, "idempotency_key_reused",
                   "this Idempotency-Key was used for a different request");
        return;
    }
    res->status = first->status;
    res->json = first->json ? json_deep_copy(first->json) : NULL;
    if (first->raw) {
        res->raw = malloc(first->raw_len);
        if (res->raw)
            memcpy(res->raw, first->raw, first->raw_len);
        res->raw_len = res->raw ? first->raw_len : 0;
    }
}

/* Inserts the orders of the items marked todo; answers each 201. */
static int insert_orders(orders_app *app, db_conn *c, order_item **it, int n)
{
    order *orders = calloc((size_t)n, sizeof *orders), *stored = calloc((size_t)n, sizeof *stored);
    char **payloads = calloc((size_t)n, sizeof *payloads);
    order_item **mine = calloc((size_t)n, sizeof *mine);
    int m = 0, rc = orders && stored && payloads && mine ? 0 : -DB_FAILED;
    for (int i = 0; rc == 0 && i < n; i++) {
        if (!it[i]->todo)
            continue;
        payment_msg request;
        order_payment_request(&it[i]->o, &request);
        orders[m] = it[i]->o;
        /* The order's trace is its request's: its message goes on in it. */
        outbox_traceparent(&it[i]->base.trace, orders[m].traceparent);
        mine[m] = it[i];
        if (!(payloads[m++] = msg_encode(&request)))
            rc = -DB_FAILED;
    }
    if (rc == 0 && m)
        rc = store_orders_create_many(c, orders, (const char *const *)payloads, m,
                                      MSG_TOPIC_REQUESTS, app->redrive_after_ms, stored);
    for (int i = 0; rc == m && i < m; i++) /* stored[i] is orders[i] */
        http_json(&mine[i]->base.res, 201, order_json(&stored[i]));
    for (int i = 0; payloads && i < m; i++)
        free(payloads[i]);
    free(orders), free(stored), free(payloads), free(mine);
    return rc < 0 ? rc : rc == m ? 0 : -DB_FAILED;
}

/* How a group's transaction ended, when it failed: */
typedef enum {
    GROUP_FAILED,   /* nothing was written: the database said so */
    GROUP_LATE,     /* nothing was written: cancelled at the deadline */
    GROUP_IN_DOUBT, /* the connection broke while it could commit */
} group_failure;

/* One transaction for the whole group: the keys, the orders, the answers.
 * Nothing of it may commit past the group's earliest deadline: a command
 * still running then is cancelled (db_set_deadline); only a COMMIT under
 * way is left to finish. On failure, *how says what is known. */
static int run_group(orders_app *app, order_item **it, int n, group_failure *how)
{
    idem_slot *slots = calloc((size_t)n, sizeof *slots);
    int nslots = 0;
    for (int i = 0; slots && i < n; i++) {
        it[i]->leader = i;
        for (int j = 0; it[i]->key[0] && j < i; j++) {
            if (strcmp(it[j]->key, it[i]->key) == 0) {
                it[i]->leader = j;
                break;
            }
        }
        it[i]->todo = it[i]->leader == i;
        if (it[i]->todo && it[i]->key[0])
            slots[nslots++] = (idem_slot){
                .key = it[i]->key, .fingerprint = it[i]->fingerprint, .res = &it[i]->base.res};
    }
    db_conn *c = NULL;
    int64_t deadline = group_deadline((group_item *const *)it, n);
    int rc = slots ? db_acquire(app->svc.db, 1000, &c) : -DB_FAILED;
    if (rc == 0)
        db_set_deadline(c, deadline);
    /* Without keys the insert is one statement, atomic by itself. */
    if (rc == 0 && nslots)
        rc = db_begin(c);
    if (rc == 0 && nslots)
        rc = idem_claim_many(c, slots, nslots);
    for (int s = 0; rc == 0 && s < nslots; s++) {
        order_item *owner = (order_item *)((char *)slots[s].res - offsetof(order_item, base.res));
        owner->todo = slots[s].claimed; /* else answered from the stored row */
    }
    if (rc == 0)
        rc = insert_orders(app, c, it, n);
    if (rc == 0 && nslots)
        rc = idem_save_many(c, slots, nslots);
    if (rc == 0 && nslots)
        rc = db_commit(c);
    *how = db_in_doubt(c)                           ? GROUP_IN_DOUBT
           : deadline && clock_now_ms() >= deadline ? GROUP_LATE
                                                    : GROUP_FAILED;
    db_release(app->svc.db, c); /* rolls back whatever was not committed */
    free(slots);
    return rc;
}

void orders_create_expired(void *arg, group_item *item)
{
    (void)arg;
    http_res_clear(&item->res);
    http_error(&item->res, 503, "not_created",
               "the order was not created: the database did not take it in time; retry");
    http_add_header(&item->res, "Retry-After", "1");
}

void orders_create_group(void *arg, group_item **items, int n)
{
    orders_app *app = arg;
    order_item **it = (order_item **)items;
    group_failure how = GROUP_FAILED;
    int rc = run_group(app, it, n, &how);
    if (rc < 0) {
        for (int i = 0; i < n; i++)
            http_res_clear(&it[i]->base.res);
        if (how != GROUP_FAILED) {
            /* Past the deadline nothing was written, and the client is
             * told so; in doubt, it is told that. Never both. */
            for (int i = 0; i < n; i++) {
                if (how == GROUP_LATE)
                    orders_create_expired(app, items[i]);
                else
                    answer_outcome_unknown(&it[i]->base.res);
            }
            return;
        }
        if (n > 1 && !db_transient(rc)) {
            /* The database refused something of the group: each request
             * alone, so that only the one at fault fails. */
            log_msg(LOG_WARN, NULL, "a group of %d orders failed; each goes alone", n);
            for (int i = 0; i < n; i++)
                orders_create_group(app, &items[i], 1);
            return;
        }
        for (int i = 0; i < n; i++)
            answer_db_error(&it[i]->base.res, rc);
        return;
    }
    for (int i = 0; i < n; i++)
        if (it[i]->leader != i)
            answer_as_leader(it[i], it[it[i]->leader]);
    outbox_relay_wake(app->svc.relay);
}
