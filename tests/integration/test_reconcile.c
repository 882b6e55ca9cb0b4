/* make reconcile (scripts/reconcile.sh) finds what it says it checks: each
 * test breaks one user's books the way a bug would, and the check that
 * names the fault must fail, and only for that user. */
#include "harness.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Asserts that reconcile for `user` fails on `check`, and only on it. */
static void fails_on(const char *user, const char *check)
{
    char *out = NULL, want[96];
    cr_assert_eq(reconcile(user, &out), 1, "%s", out);
    snprintf(want, sizeof want, "FAIL  %s ", check);
    cr_assert(strstr(out, want), "%s did not fail:\n%s", check, out);
    int fails = 0;
    for (const char *p = out; (p = strstr(p, "FAIL  ")); p++)
        fails++;
    cr_assert_eq(fails, 1, "more than %s failed:\n%s", check, out);
    free(out);
}

Test(reconcile, the_books_of_a_quiet_shop_hold)
{
    char user[64], id[37], *out = NULL;
    unique_name(user, sizeof user, "books");
    account_with(user, 100);
    cr_assert_eq(place_order(user, 30, id), 201);
    cr_assert(all_final(user, 30000));
    cr_assert_eq(reconcile(user, &out), 0, "%s", out);
    cr_assert(strstr(out, "reconcile: the books hold"), "%s", out);
    cr_assert(strstr(out, "ok    across/paid_orders_debited_once                   1 checked"),
              "%s", out);
    free(out);
}

/* A balance that is not what its transfers add up to. */
Test(reconcile, a_balance_changed_by_hand_is_found)
{
    char user[64];
    unique_name(user, sizeof user, "bookshand");
    account_with(user, 100);
    PGconn *p = payments_db();
    db_ok(p, "UPDATE accounts SET balance = balance + 1 WHERE user_id = $1", user);
    fails_on(user, "payments/balances_equal_entries");
    db_ok(p, "UPDATE accounts SET balance = balance - 1 WHERE user_id = $1", user);
    PQfinish(p);
    assert_money_adds_up(user);
}

/* For wait_until: payments' database has a row for `sql` with `param`. */
typedef struct row_wait {
    PGconn *db;
    const char *sql, *param;
} row_wait;

static bool row_exists(void *arg)
{
    row_wait *w = arg;
    return db_int(w->db, w->sql, w->param, NULL) > 0;
}

/* Money taken for an order orders never had (a forged request). */
Test(reconcile, a_debit_without_its_order_is_found, .timeout = 60)
{
    char user[64], ghost[37];
    unique_name(user, sizeof user, "booksghost");
    account_with(user, 100);
    random_uuid(ghost);
    inject_request(ghost, user, 10, 1);
    row_wait w = {payments_db(), "SELECT count(*) FROM inbox WHERE order_id = $1", ghost};
    cr_assert(wait_until(row_exists, &w, 30000), "the forged request was not decided");
    PQfinish(w.db);
    fails_on(user, "across/every_debit_has_its_order");
}

/* A refund credited that orders never asked for (a forged refund): the
 * paid order's credits are no longer its refunded_amount. */
Test(reconcile, a_refund_credited_without_its_order_record_is_found, .timeout = 60)
{
    char user[64], id[37], refund[37];
    unique_name(user, sizeof user, "booksrefund");
    account_with(user, 100);
    cr_assert_eq(place_order(user, 30, id), 201);
    cr_assert(all_final(user, 30000));
    random_uuid(refund);
    inject_refund(refund, id, user, 10, 1);
    row_wait w = {payments_db(), "SELECT count(*) FROM refund_inbox WHERE refund_id = $1", refund};
    cr_assert(wait_until(row_exists, &w, 30000), "the forged refund was not decided");
    PQfinish(w.db);
    char *out = NULL;
    cr_assert_eq(reconcile(user, &out), 1, "%s", out);
    cr_assert(strstr(out, "FAIL  across/completed_refunds_credited_once "), "%s", out);
    cr_assert(strstr(out, "unknown to orders"), "%s", out);
    cr_assert(strstr(out, "FAIL  across/paid_orders_debited_once "), "%s", out);
    free(out);
}

/* Double entry in the database: a transfer in a direction its kind does
 * not have (money out of nowhere, or to the wrong account) is refused,
 * whatever the code does. */
Test(reconcile, a_transfer_that_would_unbalance_the_books_is_refused)
{
    char user[64];
    unique_name(user, sizeof user, "booksway");
    account_with(user, 100);
    PGconn *p = payments_db();
    const char *bad[] = {
        "INSERT INTO ledger (user_id, kind, amount, from_account, to_account)"
        " VALUES ($1, 'deposit', 5, '@revenue', $1)", /* a deposit paid by the shop */
        "INSERT INTO ledger (user_id, kind, amount, from_account, to_account)"
        " VALUES ($1, 'deposit', 5, $1, $1)", /* to and from itself */
        "INSERT INTO ledger (user_id, kind, amount, order_id, from_account, to_account)"
        " VALUES ($1, 'debit', 5, gen_random_uuid()::text, '@world', '@revenue')",
        "INSERT INTO ledger (user_id, kind, amount, order_id, from_account, to_account)"
        " VALUES ($1, 'refund', 5, gen_random_uuid()::text, '@revenue', $1)", /* no refund id */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *params[] = {user};
        PGresult *r = PQexecParams(p, bad[i], 1, NULL, params, NULL, NULL, 0);
        cr_assert_eq(PQresultStatus(r), PGRES_FATAL_ERROR, "%s was taken", bad[i]);
        cr_assert_str_eq(PQresultErrorField(r, PG_DIAG_SQLSTATE), "23514", "%s",
                         PQresultErrorMessage(r));
        PQclear(r);
    }
    PQfinish(p);
    assert_money_adds_up(user);
}
