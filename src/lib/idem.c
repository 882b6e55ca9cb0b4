#include "lib/idem.h"
#include "lib/log.h"
#include "lib/answer.h"
#include "lib/valid.h"

#include <errno.h>
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
    /* A group's keys at once (idem_claim_many): the claimed ones come back. */
    {"idem_claim_many",
     "INSERT INTO idempotency_keys (key, fingerprint)"
     " SELECT k, sha256(convert_to(f, 'UTF8')) FROM unnest($1::text[], $2::text[]) AS t(k, f)"
     " ON CONFLICT (key) DO NOTHING RETURNING key"},
    /* One row per key given, in their order (a key no longer there gives
     * NULLs): row i answers slot i; the claimed ones are skipped. */
    {"idem_lookup_many", "SELECT i.fingerprint = sha256(convert_to(t.f, 'UTF8')), i.status, i.body"
                         " FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(k, f, n)"
                         " LEFT JOIN idempotency_keys i ON i.key = t.k ORDER BY t.n"},
    {"idem_save_many",
     "UPDATE idempotency_keys i SET status = t.s, body = t.b"
     " FROM unnest($1::text[], $2::int[], $3::text[]) AS t(k, s, b) WHERE i.key = t.k"},
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

int idem_scoped_key(const http_req *req, http_res *res, const char *scope,
                    char out[HTTP_IDEM_SCOPED_MAX])
{
    const char *given = http_header(req, "Idempotency-Key");
    if (!given)
        return 0;
    if (!valid_idempotency_key(given)) {
        http_error(res, 400, "invalid_idempotency_key",
                   "Idempotency-Key must be 1-255 printable ASCII characters");
        return -EINVAL;
    }
    /* A user's keys are theirs: the same key from two users is two keys
     * (a user id has no ':'). */
    snprintf(out, HTTP_IDEM_SCOPED_MAX, "%s:%s", scope, given);
    return 1;
}

/* The answer a key stored before gives: row `i` of `r` holds (same
 * fingerprint, status, body), or no row when the key is gone. */
static void answer_stored(PGresult *r, int i, http_res *res)
{
    if (!r || i >= PQntuples(r) || PQgetisnull(r, i, 1)) {
        /* Deleted by the purge in between, or saved without an answer:
         * neither happens inside the retention window. */
        http_error(res, 409, "idempotency_key_in_use", "retry the request");
    } else if (strcmp(PQgetvalue(r, i, 0), "t") != 0) {
        http_error(res, 422, "idempotency_key_reused",
                   "this Idempotency-Key was used for a different request");
    } else {
        json_decref(res->json);
        res->json = NULL;
        res->status = atoi(PQgetvalue(r, i, 1));
        res->raw = strdup(PQgetvalue(r, i, 2));
        res->raw_len = res->raw ? strlen(res->raw) : 0;
    }
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
    answer_stored(r, 0, res);
    PQclear(r);
    return 1;
}

static int by_key(const void *a, const void *b)
{
    return strcmp(((const idem_slot *)a)->key, ((const idem_slot *)b)->key);
}

int idem_claim_many(db_conn *c, idem_slot *slots, int n)
{
    /* In key order: two groups claiming the same keys lock them in the
     * same order, so they wait for each other but never deadlock. */
    qsort(slots, (size_t)n, sizeof *slots, by_key);
    db_array keys, fps;
    db_array_begin(&keys), db_array_begin(&fps);
    for (int i = 0; i < n; i++) {
        db_array_add(&keys, slots[i].key);
        db_array_add(&fps, slots[i].fingerprint);
        slots[i].claimed = false;
    }
    db_array_end(&keys), db_array_end(&fps);
    const char *params[] = {keys.text, fps.text};
    PGresult *r = NULL;
    int rc = db_exec(c, "idem_claim_many", 2, params, &r);
    int taken = 0;
    for (int i = 0; rc == 0 && i < PQntuples(r); i++) {
        idem_slot probe = {.key = PQgetvalue(r, i, 0)};
        idem_slot *s = bsearch(&probe, slots, (size_t)n, sizeof *slots, by_key);
        if (s)
            s->claimed = true, taken++;
    }
    PQclear(r);
    r = NULL;
    /* The keys used before: their stored answers, in the slots' order. */
    if (rc == 0 && taken < n)
        rc = db_exec(c, "idem_lookup_many", 2, params, &r);
    for (int i = 0; rc == 0 && taken < n && i < n; i++)
        if (!slots[i].claimed)
            answer_stored(r, i, slots[i].res);
    PQclear(r);
    db_array_free(&keys), db_array_free(&fps);
    return rc;
}

int idem_save_many(db_conn *c, const idem_slot *slots, int n)
{
    db_array keys, statuses, bodies;
    db_array_begin(&keys), db_array_begin(&statuses), db_array_begin(&bodies);
    int saved = 0, rc = 0;
    for (int i = 0; rc == 0 && i < n; i++) {
        if (!slots[i].claimed)
            continue;
        char *body = json_dumps(slots[i].res->json, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (!body) {
            rc = -DB_FAILED;
            break;
        }
        db_array_add(&keys, slots[i].key);
        db_array_add_int(&statuses, slots[i].res->status);
        db_array_add(&bodies, body);
        free(body);
        saved++;
    }
    db_array_end(&keys), db_array_end(&statuses), db_array_end(&bodies);
    const char *params[] = {keys.text, statuses.text, bodies.text};
    if (rc == 0 && saved)
        rc = db_exec(c, "idem_save_many", 3, params, NULL);
    db_array_free(&keys), db_array_free(&statuses), db_array_free(&bodies);
    return rc;
}

void idem_run(db_pool *pool, http_req *req, http_res *res, const char *scope, idem_work work,
              void *arg)
{
    char *fp = NULL, *stored = NULL, scoped[HTTP_IDEM_SCOPED_MAX];
    int keyed = idem_scoped_key(req, res, scope, scoped);
    if (keyed < 0)
        return;
    const char *key = keyed ? scoped : NULL;
    db_conn *c = NULL;
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
        answer_write_error(res, rc, c);
done:
    db_release(pool, c); /* rolls back whatever was not committed */
    free(fp);
    free(stored);
}

int idem_purge(db_conn *c, int max_age_s, int batch)
{
    return db_purge(c, "idem_purge", max_age_s, batch);
}

static const cfg_setting idem_settings_list[] = {
    CFG_I("IDEMPOTENCY_RETENTION_S", idem_settings, retention_s, 60, 365 * 86400, 86400,
          "Idempotency-Keys older than this are purged"),
};
const cfg_table idem_settings_table = CFG_TABLE("idem", idem_settings_list);
