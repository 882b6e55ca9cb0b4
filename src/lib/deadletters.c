#include "lib/deadletters.h"
#include "lib/config.h"
#include "lib/log.h"
#include "lib/answer.h"
#include "lib/valid.h"

#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define PREVIEW_BYTES 256
#define LIST_MAX 100
/* Dead letters one POST /dead-letters/replay handles: a request's thread
 * is not held for long (every connection of its worker waits meanwhile);
 * `more` tells the operator to call again. */
#define REPLAY_ALL_MAX 100
#define NOTE_MAX 500

#define DL_COLS                                                                                    \
    "id, topic, partition, \"offset\", reason, encode(substring(payload from 1 for 256), 'hex'),"  \
    " octet_length(payload), " DB_TS(                                                              \
        "created_at") ", coalesce(resolution, ''),"                                                \
                      " coalesce(resolved_by, ''), coalesce(note, ''), coalesce(" DB_TS(           \
                          "resolved_at") ", '')"

const db_stmt deadletter_stmts[] = {
    {"dl_list", "SELECT " DL_COLS " FROM dead_letters WHERE ($1::bool OR resolved_at IS NULL)"
                " AND id > $2 ORDER BY id LIMIT $3"},
    {"dl_take", "SELECT topic, partition, \"offset\", encode(key, 'hex'), encode(payload, 'hex'),"
                " resolved_at IS NOT NULL FROM dead_letters WHERE id = $1 FOR UPDATE"},
    {"dl_resolve", "UPDATE dead_letters SET resolved_at = now(), resolution = $2,"
                   " resolved_by = $3, note = nullif($4, '') WHERE id = $1 RETURNING " DL_COLS},
    {"dl_open", "SELECT id FROM dead_letters WHERE resolved_at IS NULL AND id > $1"
                " ORDER BY id LIMIT $2"},
    {NULL, NULL},
};

/* Bytes from PostgreSQL's hex text, NUL-terminated; caller frees. */
static unsigned char *unhex(const char *hex, size_t *len)
{
    size_t hex_len = strlen(hex);
    unsigned char *out = malloc(hex_len / 2 + 1);
    if (out && sodium_hex2bin(out, hex_len / 2, hex, hex_len, NULL, len, NULL) != 0) {
        free(out);
        return NULL;
    }
    if (out)
        out[*len] = '\0';
    return out;
}

static json_t *nullable(const char *s)
{
    return s[0] ? json_string(s) : json_null();
}

static json_t *row_json(PGresult *r, int i)
{
    size_t n = 0;
    unsigned char *bytes = unhex(PQgetvalue(r, i, 5), &n);
    /* The first bytes as text: NUL and broken UTF-8 shown as '?'. */
    for (size_t k = 0; bytes && k < n; k++)
        if (bytes[k] == '\0')
            bytes[k] = '?';
    if (bytes)
        valid_utf8_repair((char *)bytes);
    json_t *j = json_pack(
        "{s:I, s:s, s:I, s:I, s:s, s:s, s:I, s:s, s:o, s:o, s:o, s:o}", "id",
        (json_int_t)strtoll(PQgetvalue(r, i, 0), NULL, 10), "topic", PQgetvalue(r, i, 1),
        "partition", (json_int_t)atoi(PQgetvalue(r, i, 2)), "offset",
        (json_int_t)strtoll(PQgetvalue(r, i, 3), NULL, 10), "reason", PQgetvalue(r, i, 4),
        "payload_preview", bytes ? (char *)bytes : "", "payload_bytes",
        (json_int_t)strtoll(PQgetvalue(r, i, 6), NULL, 10), "created_at", PQgetvalue(r, i, 7),
        "resolution", nullable(PQgetvalue(r, i, 8)), "resolved_by", nullable(PQgetvalue(r, i, 9)),
        "note", nullable(PQgetvalue(r, i, 10)), "resolved_at", nullable(PQgetvalue(r, i, 11)));
    free(bytes);
    return j;
}

/* The caller, who must be an operator: the service's pool, or NULL with
 * the answer in `res`. */
static db_pool *operator_only(http_req *req, http_res *res, bool write, caller *who)
{
    const deadletter_service *s = req->ctx;
    if (!caller_of(req, res, (const callers *)((char *)req->app + s->callers), write, who))
        return NULL;
    if (who->claims.role != AUTH_OPERATOR) {
        http_error(res, 403, "operator_only", "the dead-letter tools are for operators");
        return NULL;
    }
    return *(db_pool **)((char *)req->app + s->db);
}

static bool parse_id(http_req *req, http_res *res, int64_t *id)
{
    if (cfg_parse_int(req->params[0], 1, INT64_MAX, id) == 0)
        return true;
    http_error(res, 404, "dead_letter_not_found", "no dead letter %s", req->params[0]);
    return false;
}

void deadletter_list(http_req *req, http_res *res)
{
    caller who;
    db_pool *db = operator_only(req, res, false, &who);
    if (!db)
        return;
    const char *state = http_query(req, "state"), *limit_s = http_query(req, "limit");
    const char *cursor_s = http_query(req, "cursor");
    int64_t limit = 20, cursor = 0;
    if (state && strcmp(state, "open") != 0 && strcmp(state, "all") != 0) {
        http_error(res, 400, "invalid_state", "state must be open or all");
        return;
    }
    if ((limit_s && cfg_parse_int(limit_s, 1, LIST_MAX, &limit) < 0) ||
        (cursor_s && cfg_parse_int(cursor_s, 0, INT64_MAX, &cursor) < 0)) {
        http_error(res, 400, "invalid_page", "limit is 1 to %d, cursor a next_cursor", LIST_MAX);
        return;
    }
    char c_s[24], l_s[24];
    snprintf(c_s, sizeof c_s, "%" PRId64, cursor);
    snprintf(l_s, sizeof l_s, "%" PRId64, limit + 1);
    const char *params[] = {state && strcmp(state, "all") == 0 ? "true" : "false", c_s, l_s};
    db_conn *c = NULL;
    PGresult *r = NULL;
    int rc = db_acquire(db, 1000, &c);
    if (rc == 0)
        rc = db_exec(c, "dl_list", 3, params, &r);
    db_release(db, c);
    if (rc < 0) {
        answer_db_error(res, rc);
        return;
    }
    int n = PQntuples(r), shown = n > limit ? (int)limit : n;
    json_t *list = json_array();
    for (int i = 0; i < shown; i++)
        json_array_append_new(list, row_json(r, i));
    json_t *next = n > limit ? json_string(PQgetvalue(r, shown - 1, 0)) : json_null();
    PQclear(r);
    http_json(res, 200, json_pack("{s:o, s:o}", "dead_letters", list, "next_cursor", next));
}

/* Resolves dead letter `id` in one transaction: takes its row (FOR
 * UPDATE), and when `replay`, runs its message through the consumer's
 * handler as the consumer would have it; then marks it (`by`, `note`) and,
 * when `row` is not NULL, gives the row as it is now. Returns 0, -ENOENT,
 * -EALREADY (resolved before), -EINVAL (the handler still refuses it:
 * `why`), or -DB_*. */
static int resolve(void *app, const deadletter_service *s, db_pool *db, int64_t id, bool replay,
                   const char *by, const char *note, char *why, size_t whylen, json_t **row)
{
    char id_s[24];
    snprintf(id_s, sizeof id_s, "%" PRId64, id);
    const char *take[] = {id_s}, *mark[] = {id_s, replay ? "replayed" : "discarded", by, note};
    db_conn *c = NULL;
    PGresult *r = NULL, *marked = NULL;
    unsigned char *key = NULL, *payload = NULL;
    int rc = db_acquire(db, 1000, &c);
    if (rc == 0)
        rc = db_begin(c);
    if (rc == 0)
        rc = db_exec(c, "dl_take", 1, take, &r);
    if (rc == 0 && PQntuples(r) == 0)
        rc = -ENOENT;
    else if (rc == 0 && strcmp(PQgetvalue(r, 0, 5), "t") == 0)
        rc = -EALREADY;
    if (rc == 0 && replay) {
        rd_kafka_message_t m = {0};
        size_t klen = 0, plen = 0;
        key = unhex(PQgetvalue(r, 0, 3), &klen);
        payload = unhex(PQgetvalue(r, 0, 4), &plen);
        m.key = key, m.key_len = klen, m.payload = payload, m.len = plen;
        m.partition = atoi(PQgetvalue(r, 0, 1));
        m.offset = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
        rd_kafka_message_t *batch[] = {&m};
        consumer_verdict verdict = {0};
        rc = key && payload ? s->handle(c, batch, 1, app, &verdict, NULL) : -DB_FAILED;
        if (rc == 0 && verdict.poison) {
            snprintf(why, whylen, "%s", verdict.why);
            rc = -EINVAL;
        } else if (rc < 0 && !db_transient(rc)) {
            /* What made the consumer set it aside alone (a constraint, say)
             * still holds: refused, as it was; a transient failure is 503. */
            snprintf(why, whylen, "the database refuses it (SQLSTATE %s)", db_sqlstate(c));
            rc = -EINVAL;
        }
    }
    if (rc == 0)
        rc = db_exec(c, "dl_resolve", 4, mark, &marked);
    if (rc == 0)
        rc = db_commit(c);
    db_release(db, c); /* rolls back what did not commit */
    if (rc == 0 && row)
        *row = row_json(marked, 0);
    PQclear(r), PQclear(marked);
    free(key), free(payload);
    if (rc == 0 && replay && s->after_commit)
        s->after_commit(app);
    return rc;
}

/* The answer for an action on one dead letter. */
static void answer(http_res *res, int rc, int64_t id, json_t *row, const char *why)
{
    if (rc == 0)
        http_json(res, 200, row);
    else if (rc == -ENOENT)
        http_error(res, 404, "dead_letter_not_found", "no dead letter %" PRId64, id);
    else if (rc == -EALREADY)
        http_error(res, 409, "already_resolved", "dead letter %" PRId64 " was resolved before", id);
    else if (rc == -EINVAL)
        http_error(res, 409, "still_refused", "the consumer still refuses it: %s", why);
    else
        answer_db_error(res, rc);
}

void deadletter_replay(http_req *req, http_res *res)
{
    caller who;
    db_pool *db = operator_only(req, res, true, &who);
    int64_t id;
    if (!db || !parse_id(req, res, &id))
        return;
    char why[256] = "";
    json_t *row = NULL;
    int rc = resolve(req->app, req->ctx, db, id, true, who.claims.sub, "", why, sizeof why, &row);
    log_msg(LOG_INFO, req->req_id, "operator %s replayed dead letter %" PRId64 ": %s%s%s",
            who.claims.sub, id,
            rc == 0         ? "handled"
            : rc == -EINVAL ? "still refused"
                            : "no",
            why[0] ? ", " : "", why);
    answer(res, rc, id, row, why);
}

void deadletter_replay_all(http_req *req, http_res *res)
{
    caller who;
    db_pool *db = operator_only(req, res, true, &who);
    if (!db)
        return;
    /* ?after=ID: go on past the dead letters an earlier call reached. */
    const char *after_q = http_query(req, "after");
    char *end = NULL;
    long long after = after_q ? strtoll(after_q, &end, 10) : 0;
    if (after_q && (end == after_q || *end || after < 0)) {
        http_error(res, 400, "invalid_after", "after must be a dead letter's id (an integer)");
        return;
    }
    int replayed = 0, refused = 0, rc = 0, n = 0;
    /* One more than handled: whether any is left past this call. */
    char a_s[24], l_s[16];
    snprintf(a_s, sizeof a_s, "%lld", after);
    snprintf(l_s, sizeof l_s, "%d", REPLAY_ALL_MAX + 1);
    const char *params[] = {a_s, l_s};
    db_conn *c = NULL;
    PGresult *r = NULL;
    rc = db_acquire(db, 1000, &c);
    if (rc == 0)
        rc = db_exec(c, "dl_open", 2, params, &r);
    db_release(db, c);
    n = rc == 0 ? PQntuples(r) : 0;
    /* Each in its own transaction, oldest first. */
    int64_t last = after;
    for (int i = 0; i < n && i < REPLAY_ALL_MAX && rc == 0; i++) {
        int64_t id = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        char why[256] = "";
        int one =
            resolve(req->app, req->ctx, db, id, true, who.claims.sub, "", why, sizeof why, NULL);
        if (one == 0)
            replayed++;
        else if (one == -EINVAL)
            refused++;
        else if (one != -EALREADY && one != -ENOENT) /* taken meanwhile: fine */
            rc = one;
        last = id;
    }
    PQclear(r);
    bool more = n > REPLAY_ALL_MAX;
    log_msg(LOG_INFO, req->req_id,
            "operator %s replayed dead letters after %lld: %d handled, %d still refused%s",
            who.claims.sub, after, replayed, refused, more ? ", more left" : "");
    if (rc < 0)
        answer_db_error(res, rc);
    else
        http_json(res, 200,
                  json_pack("{s:i, s:i, s:b, s:I}", "replayed", replayed, "still_refused", refused,
                            "more", more, "next_after", (json_int_t)last));
}

void deadletter_discard(http_req *req, http_res *res)
{
    caller who;
    db_pool *db = operator_only(req, res, true, &who);
    int64_t id;
    const char *reason = NULL;
    if (!db || !parse_id(req, res, &id) ||
        http_body_unpack(req, res, "{s:s}", "reason", &reason) < 0)
        return;
    size_t n = strlen(reason);
    if (n == 0 || n > NOTE_MAX) {
        http_error(res, 400, "invalid_reason", "reason must be 1 to %d bytes", NOTE_MAX);
        return;
    }
    json_t *row = NULL;
    int rc = resolve(req->app, req->ctx, db, id, false, who.claims.sub, reason, NULL, 0, &row);
    log_msg(LOG_INFO, req->req_id, "operator %s discarded dead letter %" PRId64 " (%s): %s",
            who.claims.sub, id, reason, rc == 0 ? "done" : "no");
    answer(res, rc, id, row, "");
}
