#include "payments/store.h"
#include "payments/payment.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
#define ACCOUNT_COLS "user_id, balance, " TS("created_at") ", " TS("updated_at")

const db_stmt payments_stmts[] = {
    {"account_create", "INSERT INTO accounts (user_id) VALUES ($1)"
                       " ON CONFLICT (user_id) DO NOTHING RETURNING " ACCOUNT_COLS},
    {"account_get", "SELECT " ACCOUNT_COLS " FROM accounts WHERE user_id = $1"},
    {"account_deposit",
     /* The guard keeps an overflow from raising an error, which would
      * abort the caller's transaction: no row then means "not found" or
      * "too much", which store_deposit tells apart. */
     "WITH a AS (UPDATE accounts SET balance = balance + $2, updated_at = now()"
     "           WHERE user_id = $1 AND balance <= 9223372036854775807 - $2::bigint"
     "           RETURNING *),"
     "     l AS (INSERT INTO ledger (user_id, kind, amount)"
     "           SELECT user_id, 'deposit', $2 FROM a)"
     " SELECT " ACCOUNT_COLS " FROM a"},
    {"inbox_claim", "INSERT INTO inbox (order_id, user_id, amount) VALUES ($1, $2, $3)"
                    " ON CONFLICT (order_id) DO NOTHING RETURNING 1"},
    {"inbox_get", "SELECT outcome, coalesce(reason, ''), user_id, amount FROM inbox"
                  " WHERE order_id = $1"},
    {"inbox_decide", "UPDATE inbox SET outcome = $2, reason = nullif($3, '') WHERE order_id = $1"},
    {"inbox_purge", "DELETE FROM inbox WHERE order_id IN (SELECT order_id FROM inbox"
                    " WHERE processed_at < now() - make_interval(secs => $1) LIMIT $2)"},
    /* The row lock of the UPDATE serialises concurrent debits of one
     * account, and its condition is re-checked after the wait. */
    {"payment_debit",
     "WITH a AS (UPDATE accounts SET balance = balance - $2, updated_at = now()"
     "           WHERE user_id = $1 AND balance >= $2 RETURNING user_id),"
     "     l AS (INSERT INTO ledger (user_id, kind, amount, order_id)"
     "           SELECT user_id, 'debit', $2, $3 FROM a)"
     " SELECT EXISTS (SELECT 1 FROM a), EXISTS (SELECT 1 FROM accounts WHERE user_id = $1)"},
    {NULL, NULL},
};

/* Reads row 0 of a result shaped by ACCOUNT_COLS; -ENOENT when empty. */
static int read_account(PGresult *r, account *out)
{
    if (PQntuples(r) == 0)
        return -ENOENT;
    snprintf(out->user_id, sizeof out->user_id, "%s", PQgetvalue(r, 0, 0));
    out->balance = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    snprintf(out->created_at, sizeof out->created_at, "%s", PQgetvalue(r, 0, 2));
    snprintf(out->updated_at, sizeof out->updated_at, "%s", PQgetvalue(r, 0, 3));
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

int store_account_get(db_conn *c, const char *user_id, account *out)
{
    const char *params[] = {user_id};
    return run(c, "account_get", 1, params, out);
}

int store_deposit(db_conn *c, const char *user_id, int64_t amount, account *out)
{
    char amt[24];
    snprintf(amt, sizeof amt, "%" PRId64, amount);
    const char *params[] = {user_id, amt};
    int rc = run(c, "account_deposit", 2, params, out);
    if (rc == -ENOENT && store_account_get(c, user_id, out) == 0)
        rc = -ERANGE;
    return rc;
}

int store_payment_process(db_conn *c, const payment_msg *req, payment_msg *result, bool *replayed)
{
    char amount[24];
    snprintf(amount, sizeof amount, "%" PRId64, req->amount);
    const char *claim[] = {req->order_id, req->user_id, amount};
    PGresult *r = NULL;
    int rc = db_exec(c, "inbox_claim", 3, claim, &r);
    if (rc < 0)
        return rc;
    *replayed = PQntuples(r) == 0;
    PQclear(r);

    if (*replayed) {
        const char *key[] = {req->order_id};
        if ((rc = db_exec(c, "inbox_get", 1, key, &r)) < 0)
            return rc;
        *result = *req;
        result->type = strcmp(PQgetvalue(r, 0, 0), "completed") == 0 ? MSG_PAYMENT_COMPLETED
                                                                       : MSG_PAYMENT_FAILED;
        snprintf(result->reason, sizeof result->reason, "%s", PQgetvalue(r, 0, 1));
        snprintf(result->user_id, sizeof result->user_id, "%s", PQgetvalue(r, 0, 2));
        result->amount = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
        PQclear(r);
        return 0;
    }

    const char *debit[] = {req->user_id, amount, req->order_id};
    if ((rc = db_exec(c, "payment_debit", 3, debit, &r)) < 0)
        return rc;
    bool debited = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    bool has_account = strcmp(PQgetvalue(r, 0, 1), "t") == 0;
    PQclear(r);
    payment_decide(req, debited, has_account, result);
    const char *decide[] = {req->order_id,
                            result->type == MSG_PAYMENT_COMPLETED ? "completed" : "failed",
                            result->reason};
    return db_exec(c, "inbox_decide", 3, decide, NULL);
}

int store_inbox_purge(db_conn *c, int max_age_s, int batch)
{
    return db_purge(c, "inbox_purge", max_age_s, batch);
}
