#include "lib/books.h"
#include "lib/log.h"
#include "lib/answer.h"
#include "lib/caller.h"

#include <stdlib.h>
#include <string.h>

/* A LIKE pattern of user ids: their characters, with % and _ as wildcards. */
static bool valid_pattern(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-%") == n;
}

void books_check(http_req *req, http_res *res)
{
    const books_service *s = req->ctx;
    db_pool *db = *(db_pool **)((char *)req->app + s->db);
    caller who;
    if (!caller_of(req, res, (const callers *)((char *)req->app + s->callers), false, &who))
        return;
    if (who.claims.role != AUTH_OPERATOR) {
        http_error(res, 403, "operator_only", "the books are checked by operators");
        return;
    }
    const char *users = http_query(req, "users");
    if (!users)
        users = "%";
    if (!valid_pattern(users)) {
        http_error(res, 400, "invalid_users",
                   "users must be a LIKE pattern of user ids: 1-64 of [A-Za-z0-9_.-%%]");
        return;
    }
    db_conn *c = NULL;
    PGresult *r = NULL;
    const char *params[] = {users};
    int rc = db_acquire(db, 1000, &c);
    if (rc == 0)
        rc = db_exec(c, BOOKS_STMT, 1, params, &r);
    db_release(db, c);
    if (rc < 0) {
        answer_db_error(res, rc);
        return;
    }
    json_t *checks = json_array();
    bool ok = true;
    for (int i = 0; i < PQntuples(r); i++) {
        json_int_t mismatches = strtoll(PQgetvalue(r, i, 2), NULL, 10);
        ok = ok && mismatches == 0;
        json_array_append_new(
            checks,
            json_pack("{s:s, s:I, s:I, s:o}", "name", PQgetvalue(r, i, 0), "checked",
                      (json_int_t)strtoll(PQgetvalue(r, i, 1), NULL, 10), "mismatches", mismatches,
                      "example",
                      PQgetisnull(r, i, 3) ? json_null() : json_string(PQgetvalue(r, i, 3))));
    }
    PQclear(r);
    log_msg(ok ? LOG_INFO : LOG_WARN, req->req_id, "operator %s checked the books of %s: %s",
            who.claims.sub, users, ok ? "every check held" : "MISMATCHES");
    http_json(res, 200, json_pack("{s:b, s:s, s:o}", "ok", ok, "users", users, "checks", checks));
}
