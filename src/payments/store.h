/* The payments service's SQL, all of it, as named prepared statements.
 * Every function runs inside the caller's connection and transaction. */
#ifndef PAYMENTS_STORE_H
#define PAYMENTS_STORE_H

#include "lib/db.h"
#include "payments/account.h"

/* Statements to give db_pool_new. */
extern const db_stmt store_stmts[];

/* Creates an empty account. Returns 0, -EEXIST, or -DB_*. Never aborts the
 * transaction on a duplicate. */
int store_account_create(db_conn *c, const char *user_id, account *out);

/* Returns 0, -ENOENT, or -DB_*. */
int store_account_get(db_conn *c, const char *user_id, account *out);

/* Adds `amount` to the balance and records the deposit in the ledger, in
 * one statement. Returns 0 with the new state, -ENOENT, -ERANGE (the
 * balance would overflow), or -DB_*. */
int store_deposit(db_conn *c, const char *user_id, int64_t amount, account *out);

#endif
