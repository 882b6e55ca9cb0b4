/* The identity service's SQL: users and failed sign-ins. */
#ifndef IDENTITY_STORE_H
#define IDENTITY_STORE_H

#include "lib/auth.h"
#include "lib/db.h"

extern const db_stmt identity_stmts[];

typedef struct user {
    char user_id[65];
    char password_hash[256];
    auth_role role;
    char created_at[40];
} user;

/* Creates a user; -EEXIST when the id is taken, or -DB_*. */
int store_user_create(db_conn *c, const char *user_id, const char *hash, auth_role role, user *out);

/* Creates the user as an operator, or makes an existing one an operator
 * with this password. */
int store_operator_set(db_conn *c, const char *user_id, const char *hash);

/* -ENOENT when there is no such user. */
int store_user_get(db_conn *c, const char *user_id, user *out);

/* Counts a sign-in attempt of `user_id` from `client` (an address), in
 * one statement: returns 1 to go on (the attempt counts as a failure
 * until store_attempts_clear), 0 when that pair must wait (past `max`
 * attempts in `window_s`, 2^(attempts - max) s after its last one, at most
 * the window) with the seconds left in *wait_s, or -DB_*. */
int store_attempt_take(db_conn *c, const char *user_id, const char *client, int max, int window_s,
                       int *wait_s);

/* A success: the pair's count starts again. */
int store_attempts_clear(db_conn *c, const char *user_id, const char *client);

/* Deletes up to `batch` pairs idle for longer than `max_age_s`; how many. */
int store_attempts_purge(db_conn *c, int max_age_s, int batch);

#endif
