#include "lib/idem.h"
#include "lib/log.h"
#include "lib/svc.h"
#include "lib/valid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const db_stmt idem_stmts[] = {
    /* The fingerprint is a hash of method, path and canonical body. A
     * conflicting insert waits for the holder's transaction to end. */
    {"idem_claim", "INSERT INTO idempotency_keys (key, fingerprint)"
                   " VALUES ($1, sha256(convert_to($2, 'UTF8')))"
                   " ON CONFLICT (key) DO NOTHING RETURNING 1"},
    {"idem_lookup", "SELECT fingerprint = sha256(convert_to($2, 'UTF8')), status, body"
                    " FROM idempotency_keys WHERE key = $1"},
    {"idem_save", "UPDATE idempotency_keys SET status = $2, body = $3 WHERE key = $1"},
    {"idem_purge", "DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM idempotency_keys"
                   " WHERE created_at < now() - make_interval(secs => $1) LIMIT $2)"},
    {NULL, NULL},
};

char *idem_fingerprint(const http_req *req)
{
    char *body = NULL;
    if (req->json)
        body = json_dumps(req->json, JSON_COMPACT | JSON_SORT_KEYS);
    else if (req->body_len)
        body = strndup(req->body, req->body_len);
    char *fp = NULL;
    if (asprintf(&fp, "%s %s\n%s", req->method, req->path, body ? body : "") < 0)
        fp = NULL;
    free(body);
    return fp;
}

/* Looks the key up. Returns 1 when `res` now holds the answer (a replay or
 * a 422), 0 when the key was claimed for this request, or -DB_*. */
static int claim(db_conn *c, const char *key, const char *fp, http_res *res)
{
    const char *params[] = {key, fp};
    PGresult *r = NULL;
    int rc = db_exec(c, "idem_claim", 2, params, &r);
    if (rc < 0)
        return rc;
    bool claimed = PQntuples(r) == 1;
    PQclear(r);
    if (claimed)
        return 0;
    if ((rc = db_exec(c, "idem_lookup", 2, params, &r)) < 0)
        return rc;
    if (PQntuples(r) != 1 || PQgetisnull(r, 0, 1)) {
        /* Deleted by the purge in between, or saved without an answer:
         * neither happens inside the retention window. */
        PQclear(r);
        http_error(res, 409, "idempotency_key_in_use", "retry the request");
        return 1;
    }
    if (strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
        http_error(res, 422, "idempotency_key_reused",
                   "this Idempotency-Key was used for a different request");
    } else {
        res->status = atoi(PQgetvalue(r, 0, 1));
        res->raw = strdup(PQgetvalue(r, 0, 2));
        res->raw_len = res->raw ? strlen(res->raw) : 0;
        json_decref(res->json);
        res->json = NULL;
    }
    PQclear(r);
    return 1;
}

void idem_run(db_pool *pool, http_req *req, http_res *res, const char *scope, idem_work work,
              void *arg)
{
    const char *given = http_header(req, "Idempotency-Key");
    char *fp = NULL, *stored = NULL, scoped[HTTP_IDEM_SCOPED_MAX];
    const char *key = NULL;
    db_conn *c = NULL;
    if (given && !valid_idempotency_key(given)) {
        http_error(res, 400, "invalid_idempotency_key",
                   "Idempotency-Key must be 1-255 printable ASCII characters");
        return;
    }
    /* A user's keys are theirs: the same key from two users is two keys
     * (a user id has no ':'). */
    if (given) {
        snprintf(scoped, sizeof scoped, "%s:%s", scope, given);
        key = scoped;
    }
    int rc = db_acquire(pool, 1000, &c);
    /* Without a key the work is one statement, atomic by itself: no
     * BEGIN/COMMIT round trips. */
    if (rc == 0 && key)
        rc = db_begin(c);
    if (rc == 0 && key) {
        fp = idem_fingerprint(req);
        rc = fp ? claim(c, key, fp, res) : -DB_FAILED;
        if (rc == 1) { /* answered from the stored row */
            rc = 0;
            goto done;
        }
    }
    if (rc == 0)
        rc = work(c, req, res, arg);
    if (rc == 0 && res->status >= 500)
        goto done; /* rolled back below, not stored */
    if (rc == 0 && key) {
        stored = json_dumps(res->json, JSON_COMPACT | JSON_PRESERVE_ORDER);
        char status[8];
        snprintf(status, sizeof status, "%d", res->status);
        const char *params[] = {key, status, stored};
        rc = stored ? db_exec(c, "idem_save", 3, params, NULL) : -DB_FAILED;
    }
    if (rc == 0 && key)
        rc = db_commit(c);
    if (rc < 0)
        svc_db_error(res, rc);
done:
    db_release(pool, c); /* rolls back whatever was not committed */
    free(fp);
    free(stored);
}

int idem_purge(db_conn *c, int max_age_s, int batch)
{
    return db_purge(c, "idem_purge", max_age_s, batch);
}
