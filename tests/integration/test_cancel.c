/* Cancelling an order (POST /orders/{id}/cancel), against the real
 * database and Apache Kafka: the cancel travels behind the request on its
 * partition, payments makes "cancelled" the order's permanent outcome and
 * gives back what it took, and the owner is never out of pocket. */
#include "harness.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long cancel(resp *r, const char *order_id)
{
    char path[96];
    snprintf(path, sizeof path, "/orders/%s/cancel", order_id);
    cr_assert_eq(api(r, "POST", orders_url(), path, NULL, NULL), 0);
    return r->status;
}

static const char *reason_of(PGconn *o, const char *id, char *out, size_t len)
{
    const char *params[] = {id};
    PGresult *r = PQexecParams(o, "SELECT coalesce(reason, '') FROM orders WHERE id = $1", 1, NULL,
                               params, NULL, NULL, 0);
    cr_assert_eq(PQntuples(r), 1);
    snprintf(out, len, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return out;
}

#define CREDITED "payment_cancels_total{credited=\"true\"}"
#define REPLAYED "payments_total{outcome=\"replayed\"}"

#define IGNORED "orders_results_ignored_total"

typedef struct result_wait {
    const char *user;
    int64_t ignored;
} result_wait;

/* A result reached orders: it ignored one more, or it moved the user's
 * order (which the test then refuses). */
static bool result_seen(void *arg)
{
    result_wait *w = arg;
    return metric_sum(orders_urls(), IGNORED) > w->ignored || orders_with(w->user, "NEW") == 0;
}

/* Cancelled before payments saw its request: nothing is taken, then or
 * ever: the request that comes after (a re-drive) is answered with the
 * recorded cancellation. */
Test(cancel, an_order_cancelled_before_its_payment_is_never_debited, .timeout = 60)
{
    char user[64], id[37], why[40];
    unique_name(user, sizeof user, "cancelfirst");
    account_with(user, 100);
    insert_order(user, 30, id); /* its request not sent yet */
    act_as(user);
    resp r;
    cr_assert_eq(cancel(&r, id), 202, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "status")), "NEW");
    cr_assert(json_is_true(json_object_get(r.json, "cancel_requested")));
    resp_free(&r);
    cr_assert(all_final(user, 30000), "the cancel was not answered");
    PGconn *o = orders_db(), *p = payments_db();
    cr_assert_eq(orders_with(user, "CANCELLED"), 1);
    cr_assert_str_eq(reason_of(o, id, why, sizeof why), "cancelled");

    /* The request arrives after all: answered "cancelled", never paid. */
    count_wait w = {REPLAYED, metric_sum(payments_urls(), REPLAYED) + 1};
    inject_request(id, user, 30, 1);
    cr_assert(wait_until(payments_count_reached, &w, 30000), "the late request was not answered");
    cr_assert_eq(db_int(p, "SELECT count(*) FROM ledger WHERE order_id = $1", id, NULL), 0);
    cr_assert_eq(db_int(p, "SELECT balance FROM accounts WHERE user_id = $1", user, NULL), 100);
    cr_assert_eq(db_int(p,
                        "SELECT count(*) FROM inbox WHERE order_id = $1 AND outcome = 'cancelled'",
                        id, NULL),
                 1);
    /* Cancelling again is harmless: it is cancelled. */
    cr_assert_eq(cancel(&r, id), 200, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "status")), "CANCELLED");
    resp_free(&r);
    act_as(NULL);
    PQfinish(o);
    PQfinish(p);
    assert_money_adds_up(user);
}

/* Paid before its cancel arrived (the owner asked to cancel while the
 * request was on its way: payments debited, and its payment.completed
 * does not finish an order whose owner asked to cancel): the cancel gives
 * the money back in the transaction that records it, and the order ends
 * CANCELLED, reason "cancelled". A request replayed later takes nothing. */
Test(cancel, an_order_paid_before_its_cancel_arrives_is_given_back, .timeout = 60)
{
    char user[64], id[37], why[40];
    unique_name(user, sizeof user, "cancellate");
    account_with(user, 100);
    insert_order(user, 40, id);
    PGconn *o = orders_db(), *p = payments_db();
    /* Asked to cancel after the request left: the request, then the cancel,
     * in that order on the user's partition. */
    db_ok(o, "UPDATE orders SET cancel_requested_at = now() WHERE id = $1", id);
    count_wait credited = {CREDITED, metric_sum(payments_urls(), CREDITED) + 1};
    result_wait seen = {user, metric_sum(orders_urls(), IGNORED)};
    inject_request(id, user, 40, 1);
    /* Its payment.completed reaches orders first, on its own: it must not
     * finish an order whose owner asked to cancel. */
    cr_assert(wait_until(result_seen, &seen, 30000), "the payment's result never reached orders");
    cr_assert_eq(orders_with(user, "FINISHED"), 0, "a payment finished an order being cancelled");
    act_as(user);
    resp r;
    cr_assert_eq(cancel(&r, id), 202, "%s", r.body); /* sends the payment.cancel */
    resp_free(&r);
    act_as(NULL);
    cr_assert(wait_until(payments_count_reached, &credited, 30000),
              "the paid order was not given back");
    cr_assert(all_final(user, 30000));
    cr_assert_eq(orders_with(user, "CANCELLED"), 1, "a payment finished an order being cancelled");
    cr_assert_str_eq(reason_of(o, id, why, sizeof why), "cancelled");
    cr_assert_eq(
        db_int(p, "SELECT count(*) FROM ledger WHERE order_id = $1 AND kind = 'debit'", id, NULL),
        1);
    cr_assert_eq(db_int(p,
                        "SELECT count(*) FROM ledger WHERE order_id = $1 AND kind = 'cancellation'",
                        id, NULL),
                 1);
    cr_assert_eq(db_int(p, "SELECT balance FROM accounts WHERE user_id = $1", user, NULL), 100);

    count_wait again = {REPLAYED, metric_sum(payments_urls(), REPLAYED) + 1};
    inject_request(id, user, 40, 1);
    inject_cancel(id, user, 40);
    cr_assert(wait_until(payments_count_reached, &again, 30000));
    cr_assert_eq(db_int(p, "SELECT count(*) FROM ledger WHERE order_id = $1", id, NULL), 2,
                 "a replay moved money");
    cr_assert_eq(db_int(p, "SELECT balance FROM accounts WHERE user_id = $1", user, NULL), 100);
    PQfinish(o);
    PQfinish(p);
    assert_money_adds_up(user);
}

Test(cancel, a_paid_order_is_not_cancellable_and_a_refused_one_stays_as_it_is, .timeout = 60)
{
    char user[64], paid[37], refused[37];
    unique_name(user, sizeof user, "notcancel");
    account_with(user, 10);
    cr_assert_eq(place_order(user, 10, paid), 201);
    cr_assert(all_final(user, 30000));
    cr_assert_eq(place_order(user, 10, refused), 201);
    cr_assert(all_final(user, 30000));
    act_as(user);
    resp r;
    cr_assert_eq(cancel(&r, paid), 409, "%s", r.body);
    cr_assert_str_eq(err_code(&r), "not_cancellable");
    resp_free(&r);
    cr_assert_eq(cancel(&r, refused), 200, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "reason")), "insufficient_funds");
    resp_free(&r);
    act_as(NULL);
    cr_assert_eq(orders_with(user, "FINISHED"), 1);
    cr_assert_eq(orders_with(user, "CANCELLED"), 1);
    assert_money_adds_up(user);
}

Test(cancel, only_the_owner_or_an_operator_cancels, .timeout = 60)
{
    char owner[64], other[64], id[37], op[64];
    unique_name(owner, sizeof owner, "cancelowner");
    unique_name(other, sizeof other, "cancelother");
    unique_name(op, sizeof op, "support");
    account_with(owner, 100);
    insert_order(owner, 10, id);
    resp r;
    act_as(other);
    cr_assert_eq(cancel(&r, id), 404, "%s", r.body);
    cr_assert_str_eq(err_code(&r), "order_not_found");
    resp_free(&r);
    cr_assert_eq(cancel(&r, "not-a-uuid"), 404);
    resp_free(&r);
    act_as(NULL);
    PGconn *o = orders_db();
    cr_assert_eq(db_int(o,
                        "SELECT count(*) FROM orders WHERE id = $1 AND cancel_requested_at IS NULL",
                        id, NULL),
                 1, "another user's cancel changed the order");
    PQfinish(o);
    act_as_operator(op);
    cr_assert_eq(cancel(&r, id), 202, "%s", r.body);
    resp_free(&r);
    act_as(NULL);
    cr_assert(all_final(owner, 30000));
    cr_assert_eq(orders_with(owner, "CANCELLED"), 1);
    assert_money_adds_up(owner);
}

/* The race as a shopper makes it: buy, and cancel at once, many times.
 * Each order ends either FINISHED (the cancel came too late: 409) or
 * CANCELLED (nothing taken, or given back), and the books balance. */
Test(cancel, cancels_racing_their_payments_leave_nobody_out_of_pocket, .timeout = 120)
{
    enum { N = 20 };
    char user[64], ids[N][37];
    unique_name(user, sizeof user, "cancelrace");
    account_with(user, 1000);
    int refused = 0, asked = 0;
    for (int i = 0; i < N; i++) {
        cr_assert_eq(place_order(user, 10, ids[i]), 201);
        act_as(user);
        resp r;
        long status = cancel(&r, ids[i]);
        act_as(NULL);
        cr_assert(status == 202 || status == 409, "%ld %s", status, r.body);
        refused += status == 409;
        asked += status == 202;
        resp_free(&r);
    }
    cr_assert(all_final(user, 60000), "orders left NEW");
    int64_t finished = orders_with(user, "FINISHED"), cancelled = orders_with(user, "CANCELLED");
    cr_assert_eq(finished + cancelled, N);
    cr_assert_eq(cancelled, asked, "every cancel asked in time was honoured");
    cr_assert_eq(finished, refused);
    PGconn *p = payments_db();
    cr_assert_eq(db_int(p, "SELECT balance FROM accounts WHERE user_id = $1", user, NULL),
                 1000 - 10 * finished);
    PQfinish(p);
    assert_money_adds_up(user);
}
