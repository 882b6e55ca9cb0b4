#include "payments/store.h"
#include "lib/books.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ACCOUNT_COLS "user_id, balance, " DB_TS("created_at") ", " DB_TS("updated_at")

const db_stmt payments_stmts[] = {
    {"account_create", "INSERT INTO accounts (user_id) VALUES ($1)"
                       " ON CONFLICT (user_id) DO NOTHING RETURNING " ACCOUNT_COLS},
    {"accounts_get", "SELECT " ACCOUNT_COLS " FROM accounts WHERE user_id = ANY($1::text[])"},
    {"account_deposit",
     /* The guard keeps an overflow from raising an error, which would
      * abort the caller's transaction: no row then means "not found" or
      * "too much", which store_deposit tells apart. */
     "WITH a AS (UPDATE accounts SET balance = balance + $2, updated_at = now()"
     "           WHERE user_id = $1 AND balance <= 9223372036854775807 - $2::bigint"
     "           RETURNING *),"
     "     l AS (INSERT INTO ledger (user_id, kind, amount, from_account, to_account)"
     "           SELECT user_id, 'deposit', $2, '@world', user_id FROM a)"
     " SELECT " ACCOUNT_COLS " FROM a"},
    {"payment_batch", "SELECT order_id, replayed, outcome, coalesce(reason, ''), user_id, amount"
                      " FROM payment_batch($1::uuid[], $2::text[], $3::bigint[])"},
    {"payment_cancel_batch",
     "SELECT order_id, credited, outcome, coalesce(reason, ''), user_id, amount"
     " FROM payment_cancel_batch($1::uuid[], $2::text[], $3::bigint[])"},
    {"payment_refund_batch",
     "SELECT order_id, replayed, outcome, coalesce(reason, ''), user_id, amount, refund_id"
     " FROM payment_refund_batch($4::uuid[], $1::uuid[], $2::text[], $3::bigint[])"},
    /* GET /reconciliation (lib/books.h): the books of the accounts whose
     * user id is LIKE $1, one row per check (docs/architecture.md, "The
     * books"). */
    {BOOKS_STMT,
     "WITH moves AS (SELECT to_account AS account, amount AS delta FROM ledger"
     "               UNION ALL SELECT from_account, -amount FROM ledger),"
     "     totals AS (SELECT account, sum(delta) AS total FROM moves GROUP BY account),"
     /* Per order: what was taken, given back by a cancel, and by refunds. */
     "     per_order AS (SELECT l.order_id::uuid AS order_id,"
     "                          count(*) FILTER (WHERE kind = 'debit') AS debits,"
     "                          coalesce(sum(amount) FILTER (WHERE kind = 'debit'), 0) AS taken,"
     "                          count(*) FILTER (WHERE kind = 'cancellation') AS cancels,"
     "                          coalesce(sum(amount) FILTER (WHERE kind = 'cancellation'), 0)"
     "                            AS cancelled,"
     "                          coalesce(sum(amount) FILTER (WHERE kind = 'refund'), 0) AS refunded"
     "                   FROM ledger l WHERE l.order_id IS NOT NULL AND l.user_id LIKE $1"
     "                   GROUP BY l.order_id),"
     "     decided AS (SELECT ib.order_id, ib.user_id, ib.amount, ib.outcome,"
     "                        coalesce(p.debits, 0) AS debits, coalesce(p.taken, 0) AS taken,"
     "                        coalesce(p.cancels, 0) AS cancels,"
     "                        coalesce(p.cancelled, 0) AS cancelled,"
     "                        coalesce(p.refunded, 0) AS refunded"
     "                 FROM inbox ib LEFT JOIN per_order p USING (order_id)"
     "                 WHERE ib.user_id LIKE $1),"
     "     credits AS (SELECT r.refund_id, r.amount, r.outcome, count(l.id) AS n,"
     "                        coalesce(sum(l.amount), 0) AS credited"
     "                 FROM refund_inbox r LEFT JOIN ledger l ON l.refund_id = r.refund_id"
     "                 WHERE r.user_id LIKE $1 GROUP BY r.refund_id, r.amount, r.outcome)"
     " SELECT 'ledger_sums_to_zero', count(*), (coalesce(sum(total), 0) <> 0)::int,"
     "        CASE WHEN coalesce(sum(total), 0) <> 0 THEN 'all accounts sum to ' || sum(total) END"
     "   FROM totals"
     " UNION ALL"
     " SELECT 'balances_equal_entries', count(*), count(*) FILTER (WHERE a.balance <> "
     "coalesce(t.total, 0)),"
     "        min(a.user_id || ': balance ' || a.balance || ', entries ' || coalesce(t.total, 0))"
     "          FILTER (WHERE a.balance <> coalesce(t.total, 0))"
     "   FROM accounts a LEFT JOIN totals t ON t.account = a.user_id WHERE a.user_id LIKE $1"
     " UNION ALL"
     /* Paid: one debit of its amount, nothing given back by a cancel;
      * refused: nothing taken; cancelled: whatever was taken, given back. */
     " SELECT 'decided_orders_charged_once', count(*), count(*) FILTER (WHERE NOT ok),"
     "        min(order_id || ' (' || outcome || '): taken ' || taken || ' by ' || debits"
     "            || ' debits, back ' || cancelled + refunded) FILTER (WHERE NOT ok)"
     "   FROM (SELECT d.*, CASE d.outcome"
     "                     WHEN 'completed' THEN d.debits = 1 AND d.taken = d.amount"
     "                                       AND d.cancels = 0"
     "                     WHEN 'failed' THEN d.debits = 0 AND d.cancels = 0 AND d.refunded = 0"
     "                     ELSE d.debits <= 1 AND d.cancels <= d.debits"
     "                          AND d.taken = d.cancelled + d.refunded END AS ok"
     "         FROM decided d) x"
     " UNION ALL"
     " SELECT 'refunds_credited_once', count(*), count(*) FILTER (WHERE NOT ok),"
     "        min(refund_id || ' (' || outcome || '): credited ' || n || ' times')"
     "          FILTER (WHERE NOT ok)"
     "   FROM (SELECT c.*, CASE c.outcome WHEN 'completed' THEN c.n = 1 AND c.credited = c.amount"
     "                                    ELSE c.n = 0 END AS ok FROM credits c) x"
     " UNION ALL"
     " SELECT 'refunds_within_payment', count(*),"
     "        count(*) FILTER (WHERE d.cancelled + d.refunded > d.taken),"
     "        min(d.order_id || ': taken ' || d.taken || ', back ' || d.cancelled + d.refunded)"
     "          FILTER (WHERE d.cancelled + d.refunded > d.taken)"
     "   FROM decided d"},
    {NULL, NULL},
};

/* Reads row `row` of a result shaped by ACCOUNT_COLS. */
static void read_row(PGresult *r, int row, account *out)
{
    snprintf(out->user_id, sizeof out->user_id, "%s", PQgetvalue(r, row, 0));
    out->balance = strtoll(PQgetvalue(r, row, 1), NULL, 10);
    snprintf(out->created_at, sizeof out->created_at, "%s", PQgetvalue(r, row, 2));
    snprintf(out->updated_at, sizeof out->updated_at, "%s", PQgetvalue(r, row, 3));
}

/* Reads row 0; -ENOENT when empty. */
static int read_account(PGresult *r, account *out)
{
    if (PQntuples(r) == 0)
        return -ENOENT;
    read_row(r, 0, out);
    return 0;
}

static int run(db_conn *c, const char *stmt, int n, const char *const *params, account *out)
{
    PGresult *r = NULL;
    int rc = db_exec(c, stmt, n, params, &r);
    if (rc == 0)
        rc = read_account(r, out);
    PQclear(r);
    return rc;
}

int store_account_create(db_conn *c, const char *user_id, account *out)
{
    const char *params[] = {user_id};
    int rc = run(c, "account_create", 1, params, out);
    return rc == -ENOENT ? -EEXIST : rc;
}

int store_accounts_get(db_conn *c, const char *const *user_ids, int n, account *out)
{
    db_array a;
    db_array_of(&a, user_ids, n);
    const char *params[] = {a.text};
    PGresult *r = NULL;
    int rc = db_exec(c, "accounts_get", 1, params, &r);
    if (rc == 0) {
        rc = PQntuples(r) < n ? PQntuples(r) : n;
        for (int i = 0; i < rc; i++)
            read_row(r, i, &out[i]);
    }
    PQclear(r);
    db_array_free(&a);
    return rc;
}

int store_deposit(db_conn *c, const char *user_id, int64_t amount, account *out)
{
    char amt[24];
    snprintf(amt, sizeof amt, "%" PRId64, amount);
    const char *params[] = {user_id, amt};
    int rc = run(c, "account_deposit", 2, params, out);
    if (rc == -ENOENT && store_accounts_get(c, &user_id, 1, out) == 1)
        rc = -ERANGE; /* the account exists: the deposit would overflow */
    return rc;
}

/* Runs `stmt` (payment_batch, payment_cancel_batch or payment_refund_batch:
 * one row per message, in order: order id, a flag, outcome, reason, user,
 * amount, and a refund's id) over msgs[0..n) and reads the recorded
 * outcome of each into results[i] (a `done` or `failed` message), the flag
 * into flags[i]. */
static int run_batch(db_conn *c, const char *stmt, const payment_msg *msgs, int n, msg_type done,
                     msg_type failed, payment_msg *results, bool *flags)
{
    if (n == 0)
        return 0;
    bool refunds = msg_is_refund(done);
    db_array orders, users, amounts, ids;
    db_array_begin(&orders), db_array_begin(&users), db_array_begin(&amounts);
    db_array_begin(&ids);
    for (int i = 0; i < n; i++) {
        db_array_add(&orders, msgs[i].order_id);
        db_array_add(&users, msgs[i].user_id);
        db_array_add_int(&amounts, msgs[i].amount);
        if (refunds)
            db_array_add(&ids, msgs[i].refund_id);
    }
    db_array_end(&orders), db_array_end(&users), db_array_end(&amounts), db_array_end(&ids);
    const char *params[] = {orders.text, users.text, amounts.text, ids.text};
    PGresult *r = NULL;
    int rc = db_exec(c, stmt, refunds ? 4 : 3, params, &r);
    /* One row per message, in order: the outcome as recorded (the rule is
     * the function's, db/payments/008, 009 and 010). */
    for (int i = 0; rc == 0 && i < n; i++) {
        payment_msg *m = &results[i];
        *m = msgs[i];
        flags[i] = strcmp(PQgetvalue(r, i, 1), "t") == 0;
        m->type = strcmp(PQgetvalue(r, i, 2), "completed") == 0 ? done : failed;
        snprintf(m->reason, sizeof m->reason, "%s", PQgetvalue(r, i, 3));
        snprintf(m->user_id, sizeof m->user_id, "%s", PQgetvalue(r, i, 4));
        m->amount = strtoll(PQgetvalue(r, i, 5), NULL, 10);
        if (refunds) {
            snprintf(m->order_id, sizeof m->order_id, "%s", PQgetvalue(r, i, 0));
            snprintf(m->refund_id, sizeof m->refund_id, "%s", PQgetvalue(r, i, 6));
        }
    }
    PQclear(r);
    db_array_free(&orders), db_array_free(&users), db_array_free(&amounts), db_array_free(&ids);
    return rc;
}

int store_payment_batch(db_conn *c, const payment_msg *reqs, int n, payment_msg *results,
                        bool *replayed)
{
    return run_batch(c, "payment_batch", reqs, n, MSG_PAYMENT_COMPLETED, MSG_PAYMENT_FAILED,
                     results, replayed);
}

int store_cancel_batch(db_conn *c, const payment_msg *cancels, int n, payment_msg *results,
                       bool *credited)
{
    return run_batch(c, "payment_cancel_batch", cancels, n, MSG_PAYMENT_COMPLETED,
                     MSG_PAYMENT_FAILED, results, credited);
}

int store_refund_batch(db_conn *c, const payment_msg *refunds, int n, payment_msg *results,
                       bool *replayed)
{
    return run_batch(c, "payment_refund_batch", refunds, n, MSG_REFUND_COMPLETED, MSG_REFUND_FAILED,
                     results, replayed);
}
