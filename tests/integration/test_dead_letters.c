/* Operators' dead-letter tools on both services: poison on each topic is
 * listed (topic, partition, offset, reason, first bytes) and can be
 * discarded with a reason kept, not replayed while the consumer still
 * refuses it; a message set aside by mistake (a release with a bug) is
 * replayed through the consumer's own path after the fix and debits exactly
 * once, however often it is replayed; a non-operator gets 403. */
#include "harness.h"

#include "lib/msg.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Dead letters are found by a marker inside their payload (ASCII: the
 * payloads themselves may not be UTF-8). */
typedef struct dl_wait {
    PGconn *db;
    const char *payload; /* the marker */
} dl_wait;

static bool set_aside(void *arg)
{
    dl_wait *w = arg;
    return db_int(w->db,
                  "SELECT count(*) FROM dead_letters WHERE position(convert_to($1, 'UTF8') in "
                  "payload) > 0",
                  w->payload, NULL) > 0;
}

static int64_t dead_letter_id(PGconn *db, const char *payload)
{
    return db_int(
        db,
        "SELECT max(id) FROM dead_letters WHERE position(convert_to($1, 'UTF8') in payload) > 0",
        payload, NULL);
}

/* Finds dead letter `id` in an operator's listing of `base`. */
static json_t *listed(const char *base, int64_t id)
{
    json_t *found = NULL;
    char path[96] = "/dead-letters?state=all&limit=100", next[32] = "";
    for (int page = 0; page < 1000 && !found; page++) {
        resp r;
        if (next[0])
            snprintf(path, sizeof path, "/dead-letters?state=all&limit=100&cursor=%s", next);
        cr_assert_eq(api(&r, "GET", base, path, NULL, NULL), 0);
        cr_assert_eq(r.status, 200, "%s", r.body);
        size_t i;
        json_t *d;
        json_array_foreach(json_object_get(r.json, "dead_letters"), i,
                           d) if (json_integer_value(json_object_get(d, "id")) == id) found =
            json_incref(d);
        json_t *n = json_object_get(r.json, "next_cursor");
        bool more = json_is_string(n);
        if (more)
            snprintf(next, sizeof next, "%s", json_string_value(n));
        resp_free(&r);
        if (!more)
            break;
    }
    return found;
}

static long post(const char *base, const char *path, const char *body, resp *r)
{
    cr_assert_eq(api(r, "POST", base, path, body, NULL), 0);
    return r->status;
}

Test(dead_letters, poison_on_each_topic_is_listed_refused_on_replay_and_discarded, .timeout = 90)
{
    char run[64], req_poison[128], res_poison[128], path[96];
    unique_name(run, sizeof run, "dlpoison");
    snprintf(req_poison, sizeof req_poison, "not json %s \xff\xfe", run);
    snprintf(res_poison, sizeof res_poison,
             "{\"type\":\"payment.completed\",\"version\":9,\"run\":\"%s\"}", run);
    inject_raw(MSG_TOPIC_REQUESTS, run, req_poison);
    inject_raw(MSG_TOPIC_RESULTS, run, res_poison);
    struct {
        const char *(*base)(void);
        PGconn *(*db)(void);
        const char *payload, *topic;
    } sides[] = {{payments_url, payments_db, req_poison, MSG_TOPIC_REQUESTS},
                 {orders_url, orders_db, res_poison, MSG_TOPIC_RESULTS}};
    act_as_operator("ops-dl");
    for (size_t s = 0; s < 2; s++) {
        PGconn *db = sides[s].db();
        dl_wait w = {db, run};
        cr_assert(wait_until(set_aside, &w, 30000), "%s: not dead-lettered", sides[s].topic);
        int64_t id = dead_letter_id(db, run);
        json_t *d = listed(sides[s].base(), id);
        cr_assert_not_null(d, "%s: dead letter %lld not listed", sides[s].topic, (long long)id);
        cr_assert_str_eq(json_string_value(json_object_get(d, "topic")), sides[s].topic);
        cr_assert(json_integer_value(json_object_get(d, "offset")) >= 0);
        cr_assert(strlen(json_string_value(json_object_get(d, "reason"))) > 0);
        cr_assert(strstr(json_string_value(json_object_get(d, "payload_preview")), run),
                  "the first bytes are shown");
        cr_assert(json_is_null(json_object_get(d, "resolution")));
        json_decref(d);

        resp r;
        snprintf(path, sizeof path, "/dead-letters/%lld/replay", (long long)id);
        cr_assert_eq(post(sides[s].base(), path, NULL, &r), 409, "%s", r.body);
        cr_assert_str_eq(err_code(&r), "still_refused");
        resp_free(&r);
        snprintf(path, sizeof path, "/dead-letters/%lld/discard", (long long)id);
        cr_assert_eq(post(sides[s].base(), path, "{}", &r), 400, "a reason is required");
        resp_free(&r);
        cr_assert_eq(post(sides[s].base(), path, "{\"reason\":\"garbage from a test\"}", &r), 200,
                     "%s", r.body);
        cr_assert_str_eq(json_string_value(json_object_get(r.json, "resolution")), "discarded");
        cr_assert_str_eq(json_string_value(json_object_get(r.json, "resolved_by")), "ops-dl");
        cr_assert_str_eq(json_string_value(json_object_get(r.json, "note")), "garbage from a test");
        resp_free(&r);
        cr_assert_eq(post(sides[s].base(), path, "{\"reason\":\"again\"}", &r), 409);
        resp_free(&r);
        char idtxt[24];
        snprintf(idtxt, sizeof idtxt, "%lld", (long long)id);
        cr_assert_eq(db_int(db,
                            "SELECT count(*) FROM dead_letters WHERE id = $1::bigint"
                            " AND resolution = 'discarded' AND resolved_by = 'ops-dl'",
                            idtxt, NULL),
                     1);
        PQfinish(db);
    }
    act_as(NULL);
}

Test(dead_letters, a_request_set_aside_by_mistake_is_replayed_and_debits_once, .timeout = 90)
{
    char user[64], order_id[37];
    unique_name(user, sizeof user, "dlvictim");
    account_with(user, 100);
    /* The order and its request, as orders would have published them... */
    cr_assert_eq(place_order(user, 30, order_id), 201);
    cr_assert(all_final(user, 30000));
    /* ...and a second order whose request a release with a bug set aside
     * (its re-drive far off, so only the replay can pay it). */
    PGconn *o = orders_db(), *p = payments_db();
    const char *new_order =
        "INSERT INTO orders (user_id, amount, description, status, next_redrive_at) VALUES"
        " ($1, 25, 'set aside', 'NEW', now() + interval '1 day') RETURNING id";
    const char *params[] = {user};
    PGresult *res = PQexecParams(o, new_order, 1, NULL, params, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(res));
    char second[37];
    snprintf(second, sizeof second, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    payment_msg m = {.type = MSG_PAYMENT_REQUESTED, .amount = 25};
    snprintf(m.order_id, sizeof m.order_id, "%s", second);
    snprintf(m.user_id, sizeof m.user_id, "%s", user);
    char *payload = msg_encode(&m);
    const char *dl[] = {payload, user};
    const char *insert =
        "INSERT INTO dead_letters (topic, partition, \"offset\", key, payload, reason)"
        " VALUES ('payment.requests', 0, 0, convert_to($2, 'UTF8'),"
        " convert_to($1, 'UTF8'), 'set aside by a bug') RETURNING id";
    res = PQexecParams(p, insert, 2, NULL, dl, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(res));
    char path[96], id[24];
    snprintf(id, sizeof id, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);

    /* Not for users. */
    resp r;
    act_as(user);
    snprintf(path, sizeof path, "/dead-letters/%s/replay", id);
    cr_assert_eq(post(payments_url(), path, NULL, &r), 403);
    cr_assert_str_eq(err_code(&r), "operator_only");
    resp_free(&r);
    cr_assert_eq(api(&r, "GET", payments_url(), "/dead-letters", NULL, NULL), 0);
    cr_assert_eq(r.status, 403);
    resp_free(&r);

    act_as_operator("ops-fixer");
    cr_assert_eq(post(payments_url(), path, NULL, &r), 200, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "resolution")), "replayed");
    resp_free(&r);
    cr_assert_eq(post(payments_url(), path, NULL, &r), 409, "replayed once only");
    cr_assert_str_eq(err_code(&r), "already_resolved");
    resp_free(&r);
    /* The payment went through the whole flow: paid, and the order final. */
    cr_assert(all_final(user, 30000), "the replayed request's order stayed NEW");
    cr_assert_eq(orders_with(user, "FINISHED"), 2);
    cr_assert_eq(db_int(p, "SELECT count(*) FROM ledger WHERE order_id = $1", second, NULL), 1);
    cr_assert_eq(db_int(p, "SELECT balance FROM accounts WHERE user_id = $1", user, NULL), 45);

    /* The same message set aside again (a second copy) and everything
     * replayed: the inbox answers it, nothing is debited twice. */
    res = PQexecParams(p, insert, 2, NULL, dl, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    PQclear(res);
    cr_assert_eq(post(payments_url(), "/dead-letters/replay", NULL, &r), 200, "%s", r.body);
    cr_assert_geq(json_integer_value(json_object_get(r.json, "replayed")), 1);
    resp_free(&r);
    cr_assert_eq(db_int(p, "SELECT count(*) FROM ledger WHERE order_id = $1", second, NULL), 1,
                 "debited exactly once");
    cr_assert_eq(db_int(p, "SELECT balance FROM accounts WHERE user_id = $1", user, NULL), 45);
    cr_assert_eq(db_int(p,
                        "SELECT count(*) FROM dead_letters WHERE payload = convert_to($1, 'UTF8')"
                        " AND resolution = 'replayed' AND resolved_by = 'ops-fixer'",
                        payload, NULL),
                 2);
    act_as(NULL);
    free(payload);
    PQfinish(o), PQfinish(p);
    assert_money_adds_up(user);
}

/* A dead letter the database itself refuses (the reason the consumer set
 * it aside alone, SQLSTATE 23505 here: its debit is in the ledger but its
 * inbox row is not) stays refused on replay, and replaying everything goes
 * on past it. */
Test(dead_letters, one_the_database_refuses_stays_refused_and_blocks_nothing, .timeout = 60)
{
    char user[64], order_id[37];
    unique_name(user, sizeof user, "dlrefused");
    account_with(user, 100);
    cr_assert_eq(place_order(user, 10, order_id), 201);
    cr_assert(all_final(user, 30000));
    PGconn *p = payments_db();
    const char *params[] = {order_id};
    PGresult *r =
        PQexecParams(p, "DELETE FROM inbox WHERE order_id = $1", 1, NULL, params, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    payment_msg m = {.type = MSG_PAYMENT_REQUESTED, .amount = 10};
    snprintf(m.order_id, sizeof m.order_id, "%s", order_id);
    snprintf(m.user_id, sizeof m.user_id, "%s", user);
    char *payload = msg_encode(&m);
    const char *dl[] = {payload, user};
    r = PQexecParams(p,
                     "INSERT INTO dead_letters (topic, partition, \"offset\", key, payload, reason)"
                     " VALUES ('payment.requests', 0, 0, convert_to($2, 'UTF8'),"
                     " convert_to($1, 'UTF8'), 'SQLSTATE 23505') RETURNING id",
                     2, NULL, dl, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    char path[96];
    snprintf(path, sizeof path, "/dead-letters/%s/replay", PQgetvalue(r, 0, 0));
    PQclear(r);
    act_as_operator("ops-refused");
    resp res;
    cr_assert_eq(post(payments_url(), path, NULL, &res), 409, "%s", res.body);
    cr_assert_str_eq(err_code(&res), "still_refused");
    cr_assert(strstr(res.body, "23505"), "%s", res.body);
    resp_free(&res);
    cr_assert_eq(post(payments_url(), "/dead-letters/replay", NULL, &res), 200, "%s", res.body);
    cr_assert_geq(json_integer_value(json_object_get(res.json, "still_refused")), 1);
    resp_free(&res);
    act_as(NULL);
    cr_assert_eq(db_int(p, "SELECT count(*) FROM ledger WHERE order_id = $1", order_id, NULL), 1);
    cr_assert_eq(db_int(p, "SELECT balance FROM accounts WHERE user_id = $1", user, NULL), 90);
    free(payload);
    PQfinish(p);
}

/* Replaying every open dead letter holds a request's thread (and every
 * connection of its libmicrohttpd worker) only for a bounded batch: 100 a
 * call, and a cursor to go on (issue 24: up to 1,000 transactions in one
 * request). */
Test(dead_letters, replaying_all_takes_a_hundred_a_call_and_a_cursor_goes_on, .timeout = 90)
{
    char marker[64];
    unique_name(marker, sizeof marker, "batch");
    PGconn *p = payments_db();
    int64_t before = db_int(p, "SELECT coalesce(max(id), 0) FROM dead_letters", NULL, NULL);
    db_ok(p,
          "INSERT INTO dead_letters (topic, partition, \"offset\", key, payload, reason)"
          " SELECT 'payment.requests', 0, g, NULL, convert_to('not json ' || $1, 'UTF8'),"
          " 'made by a test' FROM generate_series(1, 120) g",
          marker);
    act_as_operator("ops-batch");
    char path[96];
    snprintf(path, sizeof path, "/dead-letters/replay?after=%lld", (long long)before);
    resp r;
    cr_assert_eq(post(payments_url(), path, NULL, &r), 200, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "replayed")) +
                     json_integer_value(json_object_get(r.json, "still_refused")),
                 100, "%s", r.body);
    cr_assert(json_is_true(json_object_get(r.json, "more")), "%s", r.body);
    json_int_t next = json_integer_value(json_object_get(r.json, "next_after"));
    resp_free(&r);
    snprintf(path, sizeof path, "/dead-letters/replay?after=%lld", (long long)next);
    cr_assert_eq(post(payments_url(), path, NULL, &r), 200, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "still_refused")), 20, "%s", r.body);
    cr_assert(json_is_false(json_object_get(r.json, "more")), "%s", r.body);
    resp_free(&r);
    cr_assert_eq(post(payments_url(), "/dead-letters/replay?after=-1", NULL, &r), 400);
    cr_assert_str_eq(err_code(&r), "invalid_after");
    resp_free(&r);
    act_as(NULL);
    /* Still open, each refused as it was; set aside for the other tests. */
    cr_assert_eq(db_int(p,
                        "SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL AND"
                        " position(convert_to($1, 'UTF8') in payload) > 0",
                        marker, NULL),
                 120);
    db_ok(p,
          "UPDATE dead_letters SET resolved_at = now(), resolution = 'discarded',"
          " resolved_by = 'test' WHERE position(convert_to($1, 'UTF8') in payload) > 0",
          marker);
    PQfinish(p);
}
