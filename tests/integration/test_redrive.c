/* Re-drive (DESIGN §5): an order still NEW gets its payment request
 * published again, with a back-off that stays bounded however long the
 * order has waited. */
#include "harness.h"

#include <criterion/criterion.h>
#include <stdio.h>

/* Inserts an order in NEW, due for a re-drive, that has been re-driven
 * `count` times already, as if it had waited that long (no outbox row: only
 * the re-drive can get it paid). */
static void waiting_order(PGconn *db, const char *user, const char *count)
{
    const char *params[] = {user, count};
    PGresult *r = PQexecParams(db,
                               "INSERT INTO orders (user_id, amount, description, redrive_count,"
                               " next_redrive_at) VALUES ($1, 10, 'waited', $2::int,"
                               " now() - interval '1 minute')",
                               2, NULL, params, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQresultErrorMessage(r));
    PQclear(r);
}

/* 2^redrive_count overflowed float8 past ~1,024 re-drives (about 17 hours
 * NEW at the 60 s cap): the claim failed for every due order, silently,
 * for good. */
Test(redrive, an_order_waiting_for_days_is_still_redriven_and_others_with_it, .timeout = 90)
{
    char user[64];
    unique_name(user, sizeof user, "longwait");
    account_with(user, 100);
    int64_t failures = metric_sum(orders_urls(), "worker_failures_total{worker=\"redrive\"}");
    PGconn *db = orders_db();
    waiting_order(db, user, "5000");
    waiting_order(db, user, "0");
    PQfinish(db);

    cr_assert(all_final(user, 60000), "orders still NEW: re-drive stopped");
    cr_assert_eq(orders_with(user, "FINISHED"), 2);
    assert_money_adds_up(user);
    cr_assert_eq(metric_sum(orders_urls(), "worker_failures_total{worker=\"redrive\"}"), failures,
                 "a re-drive round failed");
}
