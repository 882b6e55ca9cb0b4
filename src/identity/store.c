#include "identity/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define USER_COLS "user_id, password_hash, role, " DB_TS("created_at")

const db_stmt identity_stmts[] = {
    {"user_create", "INSERT INTO users (user_id, password_hash, role) VALUES ($1, $2, $3)"
                    " ON CONFLICT (user_id) DO NOTHING RETURNING " USER_COLS},
    {"operator_set", "INSERT INTO users (user_id, password_hash, role) VALUES ($1, $2, 'operator')"
                     " ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash,"
                     " role = 'operator'"},
    {"user_get", "SELECT " USER_COLS " FROM users WHERE user_id = $1"},
    {"failures_count", "SELECT count(*) FROM sign_in_failures WHERE user_id = $1"
                       " AND failed_at > now() - make_interval(secs => $2)"},
    {"failure_add", "INSERT INTO sign_in_failures (user_id) VALUES ($1)"},
    {"failures_clear", "DELETE FROM sign_in_failures WHERE user_id = $1"},
    {"failures_purge", "DELETE FROM sign_in_failures WHERE ctid IN (SELECT ctid FROM"
                       " sign_in_failures WHERE failed_at < now() - make_interval(secs => $1)"
                       " LIMIT $2)"},
    {NULL, NULL},
};

static void read_user(PGresult *r, user *out)
{
    snprintf(out->user_id, sizeof out->user_id, "%s", PQgetvalue(r, 0, 0));
    snprintf(out->password_hash, sizeof out->password_hash, "%s", PQgetvalue(r, 0, 1));
    out->role = strcmp(PQgetvalue(r, 0, 2), "operator") == 0 ? AUTH_OPERATOR : AUTH_USER;
    snprintf(out->created_at, sizeof out->created_at, "%s", PQgetvalue(r, 0, 3));
}

static int one_user(db_conn *c, const char *stmt, int n, const char *const *params, user *out,
                    int none)
{
    PGresult *r = NULL;
    int rc = db_exec(c, stmt, n, params, &r);
    if (rc == 0 && PQntuples(r) == 0)
        rc = none;
    else if (rc == 0)
        read_user(r, out);
    PQclear(r);
    return rc;
}

int store_user_create(db_conn *c, const char *user_id, const char *hash, auth_role role, user *out)
{
    const char *params[] = {user_id, hash, auth_role_name(role)};
    return one_user(c, "user_create", 3, params, out, -EEXIST);
}

int store_operator_set(db_conn *c, const char *user_id, const char *hash)
{
    const char *params[] = {user_id, hash};
    return db_exec(c, "operator_set", 2, params, NULL);
}

int store_user_get(db_conn *c, const char *user_id, user *out)
{
    const char *params[] = {user_id};
    return one_user(c, "user_get", 1, params, out, -ENOENT);
}

int store_failures_count(db_conn *c, const char *user_id, int window_s)
{
    char w[16];
    snprintf(w, sizeof w, "%d", window_s);
    const char *params[] = {user_id, w};
    PGresult *r = NULL;
    int rc = db_exec(c, "failures_count", 2, params, &r);
    if (rc == 0)
        rc = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    return rc;
}

int store_failure_add(db_conn *c, const char *user_id)
{
    const char *params[] = {user_id};
    return db_exec(c, "failure_add", 1, params, NULL);
}

int store_failures_clear(db_conn *c, const char *user_id)
{
    const char *params[] = {user_id};
    return db_exec(c, "failures_clear", 1, params, NULL);
}

int store_failures_purge(db_conn *c, int max_age_s, int batch)
{
    return db_purge(c, "failures_purge", max_age_s, batch);
}
