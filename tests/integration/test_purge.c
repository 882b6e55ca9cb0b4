/* What is transient goes, what is decided stays: sent outbox rows are
 * deleted and expired Idempotency-Keys purged in batches (younger ones
 * stay), while the inbox keeps every decided payment for ever. The test
 * stack purges every half second. */
#include "harness.h"

#include <criterion/criterion.h>
#include <stdio.h>

typedef struct gone_wait {
    PGconn *db;
    const char *sql;
    const char *param;
} gone_wait;

static bool gone(void *arg)
{
    gone_wait *w = arg;
    return db_int(w->db, w->sql, w->param, NULL) == 0;
}

static void exec(PGconn *db, const char *sql, const char *p1, const char *p2)
{
    const char *params[] = {p1, p2};
    PGresult *r = PQexecParams(db, sql, 2, NULL, params, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQresultErrorMessage(r));
    PQclear(r);
}

#define KEY_SQL                                                                                    \
    "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at)"                    \
    " VALUES ($1, '\\x00', 201, '{}', now() - ($2 || ' days')::interval)"

Test(purge, expired_keys_go_young_ones_stay, .timeout = 60)
{
    char old_key[80], young_key[80];
    unique_name(old_key, sizeof old_key, "oldkey");
    unique_name(young_key, sizeof young_key, "youngkey");
    PGconn *p = payments_db(), *o = orders_db();
    exec(p, KEY_SQL, old_key, "3");
    exec(p, KEY_SQL, young_key, "0");
    exec(o, KEY_SQL, old_key, "3");
    exec(o, KEY_SQL, young_key, "0");

    gone_wait w = {p, "SELECT count(*) FROM idempotency_keys WHERE key = $1", old_key};
    cr_assert(wait_until(gone, &w, 20000), "the expired payments key stayed");
    w = (gone_wait){o, "SELECT count(*) FROM idempotency_keys WHERE key = $1", old_key};
    cr_assert(wait_until(gone, &w, 20000), "the expired orders key stayed");
    cr_assert_eq(db_int(p, "SELECT count(*) FROM idempotency_keys WHERE key = $1", young_key, NULL),
                 1);
    cr_assert_eq(db_int(o, "SELECT count(*) FROM idempotency_keys WHERE key = $1", young_key, NULL),
                 1);
    PQfinish(p);
    PQfinish(o);
}

static bool replays_above(void *arg)
{
    return metric_sum(payments_urls(), "payments_total{outcome=\"replayed\"}") > *(int64_t *)arg;
}

/* A refused payment stays refused at any age. The request fails (too
 * little money), its inbox row ages past every retention and purges run,
 * money arrives, and the same request comes again, as when a consumer
 * group whose offsets expired re-reads the topic from the start: no debit,
 * and the recorded failure is published again. */
Test(purge, a_refused_payment_replayed_after_the_purges_is_never_debited, .timeout = 60)
{
    char user[64], id[37], key[80];
    unique_name(user, sizeof user, "refused");
    unique_name(key, sizeof key, "marker");
    account_with(user, 5);
    cr_assert_eq(place_order(user, 10, id), 201);
    cr_assert(all_final(user, 30000));
    cr_assert_eq(orders_with(user, "CANCELLED"), 1);

    PGconn *p = payments_db();
    exec(p, "UPDATE inbox SET processed_at = now() - ($2 || ' days')::interval WHERE order_id = $1",
         id, "400");
    /* An expired key written after the ageing: once it is gone, a purge ran
     * after the inbox row became old. */
    exec(p, KEY_SQL, key, "3");
    gone_wait w = {p, "SELECT count(*) FROM idempotency_keys WHERE key = $1", key};
    cr_assert(wait_until(gone, &w, 20000), "no purge ran");
    cr_assert_eq(db_int(p, "SELECT count(*) FROM inbox WHERE order_id = $1 AND outcome = 'failed'",
                        id, NULL),
                 1, "the decision was purged");

    char path[128]; /* a deposit: enough money now */
    snprintf(path, sizeof path, "/accounts/%s/deposits", user);
    resp r;
    cr_assert_eq(api(&r, "POST", payments_url(), path, "{\"amount\": 100}", NULL), 0);
    cr_assert_eq(r.status, 201, "%ld %s", r.status, r.body);
    resp_free(&r);
    /* As if the first result had been lost: the order is NEW again in
     * orders (and not due for a re-drive), so only the result the replay
     * publishes can end it. */
    PGconn *o = orders_db();
    exec(o,
         "UPDATE orders SET status = 'NEW', reason = NULL, next_redrive_at = now() + interval "
         "'1 hour' WHERE id = $1 AND user_id = $2",
         id, user);
    int64_t replays = metric_sum(payments_urls(), "payments_total{outcome=\"replayed\"}");
    inject_request(id, user, 10, 1);
    cr_assert(wait_until(replays_above, &replays, 30000), "the replay was not answered");

    cr_assert(all_final(user, 30000), "the recorded failure was not published again");
    cr_assert_eq(db_int(o,
                        "SELECT count(*) FROM orders WHERE id = $1 AND status = 'CANCELLED'"
                        " AND reason = 'insufficient_funds'",
                        id, NULL),
                 1, "the order ends as it was decided, insufficient_funds");
    PQfinish(o);
    cr_assert_eq(db_int(p, "SELECT count(*) FROM ledger WHERE order_id = $1", id, NULL), 0);
    cr_assert_eq(db_int(p, "SELECT balance FROM accounts WHERE user_id = $1", user, NULL), 105);
    PQfinish(p);
    assert_money_adds_up(user);
}

Test(purge, sent_outbox_rows_are_deleted, .timeout = 60)
{
    char user[64];
    unique_name(user, sizeof user, "outboxed");
    account_with(user, 5);
    cr_assert_eq(place_order(user, 5, NULL), 201);
    cr_assert(all_final(user, 30000));
    PGconn *p = payments_db(), *o = orders_db();
    gone_wait w = {o, "SELECT count(*) FROM outbox WHERE key = $1", user};
    cr_assert(wait_until(gone, &w, 10000), "the orders outbox kept a sent row");
    cr_assert_eq(
        db_int(p, "SELECT count(*) FROM outbox WHERE payload LIKE '%' || $1 || '%'", user, NULL), 0,
        "the payments outbox kept a sent row");
    PQfinish(p);
    PQfinish(o);
}
