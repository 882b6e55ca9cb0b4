/* Refunds (POST /orders/{id}/refunds), against the real databases and
 * Apache Kafka: a paid order gives its money back in parts or whole, each
 * refund is credited exactly once (its id is payments' inbox key), and the
 * total given back never exceeds what was paid, however the refunds are
 * asked for, retried, raced or replayed. */
#include "harness.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Asks for a refund of `amount` of order `id` (0: the rest) under `key`
 * (NULL: none). Returns the HTTP status; r holds the answer. */
static long ask_refund(resp *r, const char *id, int64_t amount, const char *key)
{
    char path[96], body[64], header[300];
    snprintf(path, sizeof path, "/orders/%s/refunds", id);
    if (amount)
        snprintf(body, sizeof body, "{\"amount\":%lld}", (long long)amount);
    else
        snprintf(body, sizeof body, "{}");
    snprintf(header, sizeof header, "Idempotency-Key: %s", key ? key : "");
    const char *headers[] = {header, NULL};
    cr_assert_eq(api(r, "POST", orders_url(), path, body, key ? headers : NULL), 0);
    return r->status;
}

/* A FINISHED order of `amount` for `user` (who has `funds`), into `id`. */
static void paid_order(const char *user, int64_t funds, int64_t amount, char *id)
{
    account_with(user, funds);
    cr_assert_eq(place_order(user, amount, id), 201);
    cr_assert(all_final(user, 30000), "the order was not decided");
    cr_assert_eq(orders_with(user, "FINISHED"), 1);
}

static void get_order(resp *r, const char *id)
{
    char path[64];
    snprintf(path, sizeof path, "/orders/%s", id);
    cr_assert_eq(api(r, "GET", orders_url(), path, NULL, NULL), 0);
    cr_assert_eq(r->status, 200, "%s", r->body);
}

static int64_t int_of(const json_t *j, const char *name)
{
    return json_integer_value(json_object_get(j, name));
}

static const char *str_of(const json_t *j, const char *name)
{
    const char *s = json_string_value(json_object_get(j, name));
    return s ? s : "";
}

static int64_t balance_of(const char *user)
{
    PGconn *p = payments_db();
    int64_t b = db_int(p, "SELECT balance FROM accounts WHERE user_id = $1", user, NULL);
    PQfinish(p);
    return b;
}

#define REFUNDS_REPLAYED "payment_refunds_total{outcome=\"replayed\"}"
#define REFUNDS_FAILED "payment_refunds_total{outcome=\"failed\"}"

/* Part, then the rest: each refund COMPLETED once, the order REFUNDED with
 * all of it back, the money where it was before the purchase. A retry with
 * the key answers the same refund. */
Test(refund, a_paid_order_is_refunded_in_part_then_whole, .timeout = 90)
{
    char user[64], id[37], first[37], key[80];
    unique_name(user, sizeof user, "refundparts");
    paid_order(user, 100, 60, id);
    cr_assert_eq(balance_of(user), 40);
    act_as(user);
    resp r;
    snprintf(key, sizeof key, "%s-1", user);
    cr_assert_eq(ask_refund(&r, id, 20, key), 202, "%s", r.body);
    cr_assert_str_eq(str_of(r.json, "status"), "PENDING");
    cr_assert_eq(int_of(r.json, "amount"), 20);
    cr_assert_str_eq(str_of(r.json, "order_id"), id);
    snprintf(first, sizeof first, "%s", str_of(r.json, "id"));
    resp_free(&r);
    /* The retry is the same refund, not a second one. */
    cr_assert_eq(ask_refund(&r, id, 20, key), 202, "%s", r.body);
    cr_assert_str_eq(str_of(r.json, "id"), first);
    resp_free(&r);
    cr_assert(all_final(user, 30000), "the refund stayed PENDING");

    get_order(&r, id);
    cr_assert_str_eq(str_of(r.json, "status"), "FINISHED");
    cr_assert_eq(int_of(r.json, "refunded_amount"), 20);
    json_t *refunds = json_object_get(r.json, "refunds");
    cr_assert_eq(json_array_size(refunds), 1);
    cr_assert_str_eq(str_of(json_array_get(refunds, 0), "id"), first);
    cr_assert_str_eq(str_of(json_array_get(refunds, 0), "status"), "COMPLETED");
    resp_free(&r);
    cr_assert_eq(balance_of(user), 60);

    /* The rest: no amount. */
    snprintf(key, sizeof key, "%s-2", user);
    cr_assert_eq(ask_refund(&r, id, 0, key), 202, "%s", r.body);
    cr_assert_eq(int_of(r.json, "amount"), 40);
    resp_free(&r);
    cr_assert(all_final(user, 30000), "the refund stayed PENDING");
    get_order(&r, id);
    cr_assert_str_eq(str_of(r.json, "status"), "REFUNDED");
    cr_assert_eq(int_of(r.json, "refunded_amount"), 60);
    cr_assert_eq(json_array_size(json_object_get(r.json, "refunds")), 2);
    resp_free(&r);
    cr_assert_eq(balance_of(user), 100);

    /* Nothing is left. */
    snprintf(key, sizeof key, "%s-3", user);
    cr_assert_eq(ask_refund(&r, id, 1, key), 422, "%s", r.body);
    cr_assert_str_eq(err_code(&r), "refund_exceeds_payment");
    resp_free(&r);
    act_as(NULL);
    assert_money_adds_up(user);
}

/* More than is left is refused and changes nothing, counting refunds still
 * on their way: what may be asked for is what no refund has claimed. */
Test(refund, more_than_is_left_is_refused_and_changes_nothing, .timeout = 90)
{
    char user[64], id[37], key[80];
    unique_name(user, sizeof user, "refundtoomuch");
    paid_order(user, 100, 50, id);
    act_as(user);
    resp r;
    snprintf(key, sizeof key, "%s-1", user);
    cr_assert_eq(ask_refund(&r, id, 51, key), 422, "%s", r.body);
    cr_assert_str_eq(err_code(&r), "refund_exceeds_payment");
    resp_free(&r);
    /* Payments frozen: the first refund stays PENDING while the second is
     * asked for. */
    cr_assert_eq(stack("freeze-every payments"), 0);
    snprintf(key, sizeof key, "%s-2", user);
    long first = ask_refund(&r, id, 30, key);
    resp_free(&r);
    snprintf(key, sizeof key, "%s-3", user);
    long second = ask_refund(&r, id, 30, key);
    cr_assert_eq(stack("thaw-every payments"), 0);
    cr_assert_eq(first, 202);
    cr_assert_eq(second, 422, "%s", r.body);
    resp_free(&r);
    cr_assert(all_final(user, 30000), "the refund stayed PENDING");
    PGconn *o = orders_db();
    cr_assert_eq(db_int(o, "SELECT count(*) FROM refunds WHERE order_id = $1", id, NULL), 1);
    cr_assert_eq(db_int(o, "SELECT refunded_amount FROM orders WHERE id = $1", id, NULL), 30);
    PQfinish(o);
    cr_assert_eq(balance_of(user), 80);
    act_as(NULL);
    assert_money_adds_up(user);
}

/* Only a paid order, only with a key, only by its owner (or an operator,
 * for support), and only an amount that is one. */
Test(refund, a_refund_needs_a_paid_order_a_key_and_its_owner, .timeout = 90)
{
    char user[64], other[64], waiting[64], id[37], unpaid[37], key[80];
    unique_name(user, sizeof user, "refundrules");
    unique_name(other, sizeof other, "refundother");
    unique_name(waiting, sizeof waiting, "refundunpaid");
    paid_order(user, 100, 40, id);
    insert_order(waiting, 10, unpaid); /* NEW */
    resp r;
    act_as(waiting);
    snprintf(key, sizeof key, "%s-1", user);
    cr_assert_eq(ask_refund(&r, unpaid, 5, key), 409, "%s", r.body);
    cr_assert_str_eq(err_code(&r), "not_refundable");
    resp_free(&r);
    act_as(user);
    cr_assert_eq(ask_refund(&r, id, 5, NULL), 400, "%s", r.body);
    cr_assert_str_eq(err_code(&r), "idempotency_key_required");
    resp_free(&r);
    snprintf(key, sizeof key, "%s-2", user);
    cr_assert_eq(ask_refund(&r, id, -5, key), 400, "%s", r.body);
    cr_assert_str_eq(err_code(&r), "invalid_amount");
    resp_free(&r);
    cr_assert_eq(ask_refund(&r, "00000000-0000-4000-8000-000000000000", 5, key), 404);
    resp_free(&r);
    act_as(other);
    snprintf(key, sizeof key, "%s-3", user);
    cr_assert_eq(ask_refund(&r, id, 5, key), 404, "%s", r.body);
    cr_assert_str_eq(err_code(&r), "order_not_found");
    resp_free(&r);
    PGconn *o = orders_db();
    cr_assert_eq(db_int(o, "SELECT count(*) FROM refunds WHERE order_id = $1", id, NULL), 0);
    act_as_operator(other);
    snprintf(key, sizeof key, "%s-4", user);
    cr_assert_eq(ask_refund(&r, id, 5, key), 202, "%s", r.body);
    resp_free(&r);
    act_as(NULL);
    cr_assert(all_final(user, 30000), "the refund stayed PENDING");
    cr_assert_eq(db_int(o, "SELECT refunded_amount FROM orders WHERE id = $1", id, NULL), 5);
    PQfinish(o);
    cr_assert_eq(balance_of(user), 65);
    assert_money_adds_up(user);
}

typedef struct racer {
    const char *user, *id;
    int n;
    long status;
} racer;

static void *race(void *arg)
{
    racer *x = arg;
    char key[96];
    snprintf(key, sizeof key, "%s-race-%d", x->user, x->n);
    act_as(x->user);
    resp r;
    x->status = ask_refund(&r, x->id, 30, key);
    resp_free(&r);
    act_as(NULL);
    return NULL;
}

/* Ten refunds of 30 of one order of 100 at once: three are accepted, the
 * others refused, and 90 comes back, once. */
Test(refund, refunds_asked_at_once_never_exceed_the_payment, .timeout = 90)
{
    char user[64], id[37];
    unique_name(user, sizeof user, "refundrace");
    paid_order(user, 100, 100, id);
    enum { N = 10 };
    racer x[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        x[i] = (racer){user, id, i, 0};
        cr_assert_eq(pthread_create(&t[i], NULL, race, &x[i]), 0);
    }
    int accepted = 0, refused = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        accepted += x[i].status == 202;
        refused += x[i].status == 422;
    }
    cr_assert_eq(accepted, 3);
    cr_assert_eq(refused, N - 3);
    cr_assert(all_final(user, 30000), "a refund stayed PENDING");
    cr_assert_eq(balance_of(user), 90);
    assert_money_adds_up(user);
}

/* Payments' own rule, whatever reaches it: a refund replayed is answered
 * with its recorded outcome and never credited again; one for more than
 * is left, or for an order that was not paid, is refused. */
Test(refund, a_refund_replayed_or_forged_is_credited_at_most_once, .timeout = 90)
{
    char user[64], waiting[64], id[37], unpaid[37], key[80];
    unique_name(user, sizeof user, "refundreplay");
    unique_name(waiting, sizeof waiting, "refundunpaid");
    paid_order(user, 100, 50, id);
    account_with(waiting, 100);
    insert_order(waiting, 10, unpaid); /* NEW: never paid */
    act_as(user);
    resp r;
    snprintf(key, sizeof key, "%s-1", user);
    cr_assert_eq(ask_refund(&r, id, 20, key), 202, "%s", r.body);
    char refund_id[37];
    snprintf(refund_id, sizeof refund_id, "%s", str_of(r.json, "id"));
    resp_free(&r);
    act_as(NULL);
    cr_assert(all_final(user, 30000), "the refund stayed PENDING");
    cr_assert_eq(balance_of(user), 70);

    count_wait replayed = {REFUNDS_REPLAYED, metric_sum(payments_urls(), REFUNDS_REPLAYED) + 3};
    inject_refund(refund_id, id, user, 20, 3);
    cr_assert(wait_until(payments_count_reached, &replayed, 30000),
              "the replays were not answered");
    count_wait failed = {REFUNDS_FAILED, metric_sum(payments_urls(), REFUNDS_FAILED) + 2};
    char forged[2][37];
    random_uuid(forged[0]), random_uuid(forged[1]);
    inject_refund(forged[0], id, user, 31, 1); /* 30 left */
    inject_refund(forged[1], unpaid, waiting, 10, 1);
    cr_assert(wait_until(payments_count_reached, &failed, 30000),
              "the forged refunds were not refused");
    PGconn *p = payments_db();
    cr_assert_eq(
        db_int(p, "SELECT count(*) FROM ledger WHERE order_id = $1 AND kind = 'refund'", id, NULL),
        1);
    cr_assert_eq(db_int(p,
                        "SELECT count(*) FROM refund_inbox WHERE order_id = $1"
                        " AND outcome = 'failed' AND reason = 'exceeds_payment'",
                        id, NULL),
                 1);
    cr_assert_eq(db_int(p,
                        "SELECT count(*) FROM refund_inbox WHERE order_id = $1"
                        " AND outcome = 'failed' AND reason = 'not_paid'",
                        unpaid, NULL),
                 1);
    PQfinish(p);
    cr_assert_eq(balance_of(user), 70);
    cr_assert_eq(balance_of(waiting), 100);
    assert_money_adds_up(user);
}

/* A refund whose message never left (its outbox row lost, as a broker
 * that lost its data would lose the message) is sent again by the
 * re-drive while it is PENDING, and credited once. */
Test(refund, a_pending_refund_whose_message_was_lost_is_redriven, .timeout = 90)
{
    char user[64], id[37], refund[37];
    unique_name(user, sizeof user, "refundredrive");
    paid_order(user, 100, 40, id);
    random_uuid(refund);
    PGconn *o = orders_db();
    /* What POST /orders/{id}/refunds writes, less its outbox row. */
    const char *params[] = {refund, id};
    PGresult *r =
        PQexecParams(o,
                     "WITH o AS (UPDATE orders SET refund_reserved = refund_reserved + 15,"
                     "                  refund_count = refund_count + 1 WHERE id = $2"
                     "           RETURNING id, user_id)"
                     " INSERT INTO refunds (id, order_id, user_id, amount, next_redrive_at)"
                     " SELECT $1, o.id, o.user_id, 15, now() FROM o",
                     2, NULL, params, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQresultErrorMessage(r));
    PQclear(r);
    cr_assert(all_final(user, 30000), "the lost refund was not re-driven");
    cr_assert_eq(db_int(o, "SELECT count(*) FROM refunds WHERE id = $1 AND status = 'COMPLETED'",
                        refund, NULL),
                 1);
    cr_assert_geq(db_int(o, "SELECT redrive_count FROM refunds WHERE id = $1", refund, NULL), 1);
    cr_assert_eq(db_int(o, "SELECT refunded_amount FROM orders WHERE id = $1", id, NULL), 15);
    PQfinish(o);
    cr_assert_eq(balance_of(user), 75);
    assert_money_adds_up(user);
}
