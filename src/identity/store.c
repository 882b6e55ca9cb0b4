#include "identity/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define USER_COLS "user_id, password_hash, role, " DB_TS("created_at")

/* How long a pair past the limit ($3 failures) waits after its last
 * attempt: 2^(failures - limit) s, at most the window ($4). */
#define ATTEMPT_DELAY                                                                              \
    "make_interval(secs => least($4::float8, power(2, least(a.failures - $3, 30))))"

const db_stmt identity_stmts[] = {
    {"user_create", "INSERT INTO users (user_id, password_hash, role) VALUES ($1, $2, $3)"
                    " ON CONFLICT (user_id) DO NOTHING RETURNING " USER_COLS},
    {"operator_set", "INSERT INTO users (user_id, password_hash, role) VALUES ($1, $2, 'operator')"
                     " ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash,"
                     " role = 'operator'"},
    {"user_get", "SELECT " USER_COLS " FROM users WHERE user_id = $1"},
    /* An attempt of $1 from $2 counted, unless that pair is waiting: a
     * row back means go on. The upsert's row lock orders parallel ones. */
    {"attempt_take", "INSERT INTO sign_in_attempts AS a (user_id, client, failures, last_at)"
                     " VALUES ($1, $2, 1, now())"
                     " ON CONFLICT (user_id, client) DO UPDATE SET last_at = now(),"
                     "   failures = CASE WHEN a.last_at < now() - make_interval(secs => $4) THEN 1"
                     "                   ELSE a.failures + 1 END"
                     " WHERE a.last_at < now() - make_interval(secs => $4) OR a.failures < $3"
                     "    OR now() >= a.last_at + " ATTEMPT_DELAY " RETURNING failures"},
    {"attempt_wait",
     "SELECT greatest(1, ceil(extract(epoch FROM a.last_at + " ATTEMPT_DELAY " - now())))::int"
     " FROM sign_in_attempts a WHERE user_id = $1 AND client = $2"},
    {"attempt_clear", "DELETE FROM sign_in_attempts WHERE user_id = $1 AND client = $2"},
    {"attempts_purge", "DELETE FROM sign_in_attempts WHERE ctid IN (SELECT ctid FROM"
                       " sign_in_attempts WHERE last_at < now() - make_interval(secs => $1)"
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

int store_attempt_take(db_conn *c, const char *user_id, const char *client, int max, int window_s,
                       int *wait_s)
{
    char m[16], w[16];
    snprintf(m, sizeof m, "%d", max);
    snprintf(w, sizeof w, "%d", window_s);
    const char *params[] = {user_id, client, m, w};
    PGresult *r = NULL;
    int rc = db_exec(c, "attempt_take", 4, params, &r);
    if (rc == 0 && PQntuples(r) == 0) {
        PQclear(r), r = NULL;
        rc = db_exec(c, "attempt_wait", 4, params, &r);
        *wait_s = rc == 0 && PQntuples(r) == 1 ? atoi(PQgetvalue(r, 0, 0)) : 1;
    } else if (rc == 0) {
        rc = 1;
    }
    PQclear(r);
    return rc;
}

int store_attempts_clear(db_conn *c, const char *user_id, const char *client)
{
    const char *params[] = {user_id, client};
    return db_exec(c, "attempt_clear", 2, params, NULL);
}

int store_attempts_purge(db_conn *c, int max_age_s, int batch)
{
    return db_purge(c, "attempts_purge", max_age_s, batch);
}
