/* Outbox, inbox and Idempotency-Keys stay bounded: sent outbox rows are
 * deleted, and expired inbox rows and keys are purged in batches, while
 * younger ones stay. The test stack purges every half second. */
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

Test(purge, expired_inbox_rows_and_keys_go_young_ones_stay, .timeout = 60)
{
    char old_key[80], young_key[80];
    unique_name(old_key, sizeof old_key, "oldkey");
    unique_name(young_key, sizeof young_key, "youngkey");
    const char *old_order = "11111111-2222-4333-8444-555555555555";
    PGconn *p = payments_db(), *o = orders_db();
    exec(p,
         "INSERT INTO inbox (order_id, user_id, amount, outcome, processed_at)"
         " VALUES ($1, $2, 1, 'completed', now() - interval '30 days')"
         " ON CONFLICT (order_id) DO UPDATE SET processed_at = excluded.processed_at",
         old_order, "someone");
    const char *key_sql =
        "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at)"
        " VALUES ($1, '\\x00', 201, '{}', now() - ($2 || ' days')::interval)";
    exec(p, key_sql, old_key, "3");
    exec(p, key_sql, young_key, "0");
    exec(o, key_sql, old_key, "3");
    exec(o, key_sql, young_key, "0");

    gone_wait w = {p, "SELECT count(*) FROM inbox WHERE order_id = $1", old_order};
    cr_assert(wait_until(gone, &w, 20000), "the expired inbox row stayed");
    w = (gone_wait){p, "SELECT count(*) FROM idempotency_keys WHERE key = $1", old_key};
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
