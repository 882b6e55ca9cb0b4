/* The orders API through real HTTP, and the payment flow end to end:
 * orders, outbox, relay, Kafka, payments inbox, results. */
#include "harness.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static json_t *get_order(const char *id)
{
    char path[96];
    snprintf(path, sizeof path, "/orders/%s", id);
    /* As support does: an operator reads any order. */
    char *token = token_for("support", true), auth[2048];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    free(token);
    const char *headers[] = {auth, NULL};
    resp r;
    api(&r, "GET", orders_url(), path, NULL, headers);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_t *o = json_incref(r.json);
    resp_free(&r);
    return o;
}

Test(orders, paid_cancelled_for_funds_and_for_no_account, .timeout = 60)
{
    char user[64], ghost[64], paid[37], too_big[37], no_account[37];
    unique_name(user, sizeof user, "buyer");
    unique_name(ghost, sizeof ghost, "ghost");
    account_with(user, 100);

    cr_assert_eq(place_order(user, 30, paid), 201);
    cr_assert_eq(place_order(user, 500, too_big), 201);
    cr_assert_eq(place_order(ghost, 5, no_account), 201);
    cr_assert(all_final(user, 30000), "orders of %s still NEW", user);
    cr_assert(all_final(ghost, 30000));

    json_t *o = get_order(paid);
    cr_assert_str_eq(json_string_value(json_object_get(o, "status")), "FINISHED");
    cr_assert(json_is_null(json_object_get(o, "reason")));
    cr_assert_eq(json_integer_value(json_object_get(o, "amount")), 30);
    cr_assert_str_eq(json_string_value(json_object_get(o, "description")), "test");
    cr_assert(json_is_false(json_object_get(o, "cancel_requested")));
    cr_assert_eq(json_integer_value(json_object_get(o, "refunded_amount")), 0);
    cr_assert_eq(json_array_size(json_object_get(o, "refunds")), 0);
    /* The test stack records every trace: the order names its own. */
    const char *trace = json_string_value(json_object_get(o, "trace_id"));
    cr_assert(trace && strlen(trace) == 32 && strspn(trace, "0123456789abcdef") == 32,
              "trace_id %s", trace ? trace : "(none)");
    cr_assert_eq(json_object_size(o), 12);
    json_decref(o);
    o = get_order(too_big);
    cr_assert_str_eq(json_string_value(json_object_get(o, "status")), "CANCELLED");
    cr_assert_str_eq(json_string_value(json_object_get(o, "reason")), "insufficient_funds");
    json_decref(o);
    o = get_order(no_account);
    cr_assert_str_eq(json_string_value(json_object_get(o, "status")), "CANCELLED");
    cr_assert_str_eq(json_string_value(json_object_get(o, "reason")), "account_not_found");
    json_decref(o);

    char path[128];
    resp r;
    snprintf(path, sizeof path, "/accounts/%s", user);
    api(&r, "GET", payments_url(), path, NULL, NULL);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "balance")), 70);
    resp_free(&r);
    assert_money_adds_up(user);
    assert_money_adds_up(ghost);
}

Test(orders, new_order_answers_at_once_with_status_new)
{
    char user[64];
    unique_name(user, sizeof user, "fresh");
    char body[160];
    snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"amount\":12}", user);
    resp r;
    api(&r, "POST", orders_url(), "/orders", body, NULL);
    cr_assert_eq(r.status, 201, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "status")), "NEW");
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "description")), "",
                     "description is optional");
    cr_assert_eq(strlen(json_string_value(json_object_get(r.json, "id"))), 36);
    resp_free(&r);
}

Test(orders, unknown_and_malformed_ids_are_404)
{
    resp r;
    api(&r, "GET", orders_url(), "/orders/00000000-0000-4000-8000-000000000000", NULL, NULL);
    cr_assert_eq(r.status, 404);
    cr_assert_str_eq(err_code(&r), "order_not_found");
    resp_free(&r);
    api(&r, "GET", orders_url(), "/orders/not-a-uuid", NULL, NULL);
    cr_assert_eq(r.status, 404);
    cr_assert_str_eq(err_code(&r), "order_not_found");
    resp_free(&r);
}

Test(orders, bad_bodies_get_4xx_and_write_nothing)
{
    char long_desc[700];
    snprintf(long_desc, sizeof long_desc,
             "{\"user_id\":\"u\",\"amount\":1,\"description\":\"%0501d\"}", 0);
    struct {
        const char *body;
        const char *code;
    } cases[] = {
        {"{", "invalid_json"},
        {"", "missing_body"},
        {"{\"user_id\":\"u\"}", "missing_field"},
        /* ({"amount":5} is no error: the order is the caller's.) */
        {"{\"user_id\":\"u\",\"amount\":0}", "invalid_amount"},
        {"{\"user_id\":\"u\",\"amount\":-3}", "invalid_amount"},
        {"{\"user_id\":\"u\",\"amount\":2.5}", "invalid_type"},
        {"{\"user_id\":\"u\",\"amount\":1000000000001}", "invalid_amount"},
        {"{\"user_id\":\"u u\",\"amount\":5}", "invalid_user_id"},
        {"{\"user_id\":\"u\",\"amount\":5,\"status\":\"FINISHED\"}", "unknown_field"},
        {"{\"user_id\":\"u\",\"amount\":5,\"description\":7}", "invalid_type"},
        {"{\"user_id\":\"u\",\"amount\":5,\"description\":\"a\\u0000b\"}", "invalid_json"},
        {long_desc, "invalid_description"},
    };
    PGconn *db = orders_db();
    int64_t orders = db_int(db, "SELECT count(*) FROM orders", NULL, NULL);
    int64_t outbox = db_int(db, "SELECT count(*) + coalesce(max(id), 0) FROM outbox", NULL, NULL);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        resp r;
        api(&r, "POST", orders_url(), "/orders", cases[i].body, NULL);
        cr_assert_eq(r.status, 400, "case %zu: %ld %s", i, r.status, r.body);
        cr_assert_str_eq(err_code(&r), cases[i].code, "case %zu: %s", i, r.body);
        resp_free(&r);
    }
    cr_assert_eq(db_int(db, "SELECT count(*) FROM orders", NULL, NULL), orders);
    cr_assert_eq(db_int(db, "SELECT count(*) + coalesce(max(id), 0) FROM outbox", NULL, NULL),
                 outbox, "no outbox row was written");
    PQfinish(db);

    resp r;
    api(&r, "DELETE", orders_url(), "/orders", NULL, NULL);
    cr_assert_eq(r.status, 405);
    resp_free(&r);
}

Test(orders, listing_is_newest_first_with_a_cursor)
{
    char user[64], ids[5][37];
    unique_name(user, sizeof user, "lister");
    for (int i = 0; i < 5; i++)
        cr_assert_eq(place_order(user, i + 1, ids[i]), 201);

    char path[256], cursor[32] = "";
    int seen = 0;
    for (int page = 0; page < 3; page++) {
        snprintf(path, sizeof path, "/orders?user_id=%s&limit=2%s%s", user,
                 cursor[0] ? "&cursor=" : "", cursor);
        resp r;
        api(&r, "GET", orders_url(), path, NULL, NULL);
        cr_assert_eq(r.status, 200, "%s", r.body);
        json_t *list = json_object_get(r.json, "orders");
        cr_assert_eq(json_array_size(list), page < 2 ? 2 : 1);
        for (size_t i = 0; i < json_array_size(list); i++, seen++)
            cr_assert_str_eq(json_string_value(json_object_get(json_array_get(list, i), "id")),
                             ids[4 - seen], "page %d item %zu is not the next newest", page, i);
        json_t *next = json_object_get(r.json, "next_cursor");
        if (page < 2)
            snprintf(cursor, sizeof cursor, "%s", json_string_value(next));
        else
            cr_assert(json_is_null(next), "the last page has no next_cursor");
        resp_free(&r);
    }
    cr_assert_eq(seen, 5);

    const char *bad[] = {"/orders?user_id=", "/orders?user_id=a%20b", "/orders?user_id=x&limit=0",
                         "/orders?user_id=x&limit=101", "/orders?user_id=x&cursor=abc"};
    const char *codes[] = {"invalid_user_id", "invalid_user_id", "invalid_limit", "invalid_limit",
                           "invalid_cursor"};
    for (size_t i = 0; i < 5; i++) {
        resp r;
        api(&r, "GET", orders_url(), bad[i], NULL, NULL);
        cr_assert_eq(r.status, 400, "%s: %s", bad[i], r.body);
        cr_assert_str_eq(err_code(&r), codes[i], "%s", bad[i]);
        resp_free(&r);
    }
}

Test(orders, idempotency_key_creates_one_order, .timeout = 60)
{
    char user[64], key[80], header[100], body[160];
    unique_name(user, sizeof user, "idemorder");
    unique_name(key, sizeof key, "okey");
    account_with(user, 50);
    snprintf(header, sizeof header, "Idempotency-Key: %s", key);
    snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"amount\":20}", user);
    const char *headers[] = {header, NULL};
    resp a, b, c;
    api(&a, "POST", orders_url(), "/orders", body, headers);
    api(&b, "POST", orders_url(), "/orders", body, headers);
    cr_assert_eq(a.status, 201);
    cr_assert_eq(b.status, 201);
    cr_assert_str_eq(a.body, b.body, "the retry returns the same order");
    snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"amount\":21}", user);
    api(&c, "POST", orders_url(), "/orders", body, headers);
    cr_assert_eq(c.status, 422);
    resp_free(&a);
    resp_free(&b);
    resp_free(&c);
    cr_assert(all_final(user, 30000));
    cr_assert_eq(orders_with(user, "FINISHED"), 1);
    cr_assert_eq(orders_with(user, "NEW") + orders_with(user, "CANCELLED"), 0);
    assert_money_adds_up(user);
}

/* Bytes that are not UTF-8, in a path, a query or a header, used to come
 * back as 500 "out of memory": the error message echoed them and jansson
 * refuses to build a string that is not UTF-8. */
Test(orders, bytes_that_are_not_utf8_get_a_4xx_with_a_json_error)
{
    const char *paths[] = {"/orders/%ff", "/orders/%c0%af", "/orders?user_id=%ff%fe",
                           "/nowhere/%ed%a0%80", NULL};
    for (int i = 0; paths[i]; i++) {
        resp r;
        cr_assert_eq(api(&r, "GET", orders_url(), paths[i], NULL, NULL), 0);
        cr_assert(r.status >= 400 && r.status < 500, "%s: %ld %s", paths[i], r.status, r.body);
        cr_assert_str_neq(err_code(&r), "", "%s: no JSON error: %s", paths[i], r.body);
        resp_free(&r);
    }
    const char *key[] = {"Idempotency-Key: \xff\xfe-key", NULL};
    resp r;
    cr_assert_eq(
        api(&r, "POST", orders_url(), "/orders", "{\"user_id\":\"utf8-check\",\"amount\":1}", key),
        0);
    cr_assert(r.status >= 400 && r.status < 500, "%ld %s", r.status, r.body);
    cr_assert_str_neq(err_code(&r), "");
    resp_free(&r);
}
