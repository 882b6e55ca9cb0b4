/* Re-drive (docs/architecture.md, "One order"): an order still NEW gets its payment request
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

static void thaw_payments(void)
{
    stack("thaw-every payments");
}

typedef struct waits {
    int64_t target;
} waits;

static bool redrive_waited(void *arg)
{
    return metric_sum(orders_urls(), "orders_redrive_waits_total") >= ((waits *)arg)->target;
}

/* Payments stopped (SIGSTOP) while orders keep coming, long past their
 * re-drive delay: re-drive sees that payments has not read their requests
 * and sends none again, so the outbox has taken one row per order and no
 * more however long the outage (issue 24: each re-drive round used to add
 * a row per NEW order, and an hour of outage ~360,000). Thawed, every
 * order is paid once. */
Test(redrive, payments_stopped_under_load_adds_one_outbox_row_per_order_and_no_more, .timeout = 120,
     .fini = thaw_payments)
{
    char user[64];
    unique_name(user, sizeof user, "stalled");
    account_with(user, 1000);
    int64_t published = metric_sum(orders_urls(), "outbox_published_total");
    cr_assert_eq(stack("freeze-every payments"), 0);
    enum { THREADS = 4, EACH = 5 };
    cr_assert_eq(place_orders_at_once(user, THREADS, EACH, 10), THREADS * EACH);
    /* Every order is past REDRIVE_AFTER_MS (1 s in the tests) by now or
     * soon; each orders instance then finds payments behind, at every
     * check, several times over. */
    waits w = {metric_sum(orders_urls(), "orders_redrive_waits_total") + 6};
    cr_assert(wait_until(redrive_waited, &w, 30000), "re-drive never waited for payments");
    cr_assert_eq(redrives_of(user), 0, "requests payments had not read were sent again");
    cr_assert_eq(metric_sum(orders_urls(), "outbox_published_total") - published, THREADS * EACH,
                 "the outbox took more than one row per order");
    cr_assert_geq(metric_sum(orders_urls(), "orders_requests_unread"), THREADS * EACH);

    cr_assert_eq(stack("thaw-every payments"), 0);
    cr_assert(all_final(user, 60000), "orders still NEW after payments came back");
    cr_assert_eq(orders_with(user, "FINISHED"), THREADS * EACH);
    PGconn *p = payments_db();
    cr_assert_eq(db_int(p, "SELECT count(*) FROM ledger WHERE kind = 'debit' AND from_account = $1",
                        user, NULL),
                 THREADS * EACH, "each order debited once");
    PQfinish(p);
    assert_money_adds_up(user);
}
