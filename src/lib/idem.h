/* Idempotent HTTP writes (docs/architecture.md, "The guarantees"). A POST that creates something
 * runs its work in one transaction together with its Idempotency-Key row, so a retry with the same
 * key replays the stored status and body and changes nothing, and the same key with another request
 * gets 422. Two requests with one key at once: the second waits on the first's row lock, then
 * replays its answer. */
#ifndef SHOP_IDEM_H
#define SHOP_IDEM_H

#include "lib/config.h"
#include "lib/db.h"
#include "lib/http.h"

/* Statements to give db_pool_new. */
extern const db_stmt idem_stmts[];

/* Does the request's work: inside the key's transaction when the request
 * has a key, else in autocommit, so the work must change the database with
 * ONE statement. Fills `res` and returns 0 to commit, including for a 4xx
 * answer that wrote nothing; returns a negative -DB_* code to roll back
 * (the runner answers 503 or 500). */
typedef int (*idem_work)(db_conn *conn, http_req *req, http_res *res, void *arg);

/* Runs `work` under the request's Idempotency-Key header, if it has one.
 * Answers 400 for a malformed key, 422 for a reused one, 503 when the
 * database cannot be reached. 5xx answers are not stored: a retry runs
 * the work again. */
void idem_run(db_pool *pool, http_req *req, http_res *res, const char *scope, idem_work work,
              void *arg);
/* The key as stored: "scope:key", `scope` the acting user's id. */
#define HTTP_IDEM_SCOPED_MAX (64 + 1 + 255 + 1)

/* The request's Idempotency-Key, scoped to `scope`, into out: returns 1,
 * 0 when the request has none, or -EINVAL after a 400 in `res` (malformed). */
int idem_scoped_key(const http_req *req, http_res *res, const char *scope,
                    char out[HTTP_IDEM_SCOPED_MAX]);

/* What a key remembers of its request, hashed by the database: method,
 * path and the body, canonical (compact, keys sorted) when it was parsed
 * as JSON, so that a retry with its members in another order matches.
 * Caller frees; NULL without memory. */
char *idem_fingerprint(const http_req *req);

/* ---- many keys in one transaction (a group commit) ---- */
typedef struct idem_slot {
    const char *key;         /* scoped ("user:key"); distinct within a call */
    const char *fingerprint; /* idem_fingerprint of its request */
    http_res *res;           /* where its answer goes */
    bool claimed;            /* out: this request does the work */
} idem_slot;

/* Claims every slot's key in the caller's transaction, sorting `slots` by
 * key (a fixed lock order). A key used before answers its slot's res with
 * the stored answer, a 422 (another request) or a 409 (still in use), and
 * stays unclaimed. Returns 0 or -DB_*. */
int idem_claim_many(db_conn *conn, idem_slot *slots, int n);

/* Stores the answers of the claimed slots, in the same transaction as
 * their work. Returns 0 or -DB_*. */
int idem_save_many(db_conn *conn, const idem_slot *slots, int n);

/* Deletes up to `batch` keys older than `max_age_s`; returns how many, or
 * a negative -DB_* code. */
int idem_purge(db_conn *conn, int max_age_s, int batch);

/* How long a key is kept (idem_purge's `older_than_s`). */
typedef struct idem_settings {
    int64_t retention_s;
} idem_settings;
extern const cfg_table idem_settings_table;

#endif
