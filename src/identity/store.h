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

/* Failed sign-ins of `user_id` in the last `window_s` seconds, or -DB_*. */
int store_failures_count(db_conn *c, const char *user_id, int window_s);
int store_failure_add(db_conn *c, const char *user_id);
int store_failures_clear(db_conn *c, const char *user_id);

/* Deletes up to `batch` failures older than `max_age_s`; how many. */
int store_failures_purge(db_conn *c, int max_age_s, int batch);

#endif
