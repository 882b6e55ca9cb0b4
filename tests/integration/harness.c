#include "harness.h"
#include "lib/auth.h"
#include "lib/clock.h"
#include "lib/file.h"
#include "lib/kafka.h"
#include "lib/valid.h"
#include "lib/msg.h"

#include <criterion/criterion.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
    FILE *out = arg;
    return fwrite(data, size, n, out);
}

/* ---- tokens: minted with the test stack's signing key ---- */

static _Thread_local char acting[65];
static _Thread_local bool acting_operator;

void act_as(const char *user)
{
    snprintf(acting, sizeof acting, "%s", user ? user : "");
    acting_operator = false;
}

void act_as_operator(const char *user)
{
    act_as(user);
    acting_operator = true;
}

/* A token with these claims, signed with the stack's key (read once). */
static char *mint(const char *user, auth_role role, int64_t iat, int64_t exp, const char *audience)
{
    static auth_key key;
    static bool loaded;
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    if (!loaded) {
        const char *file = getenv("AUTH_KEY_FILE");
        char *text = file ? file_read(file, NULL) : NULL;
        cr_assert(text && auth_init() == 0 && auth_key_from_secret_text(&key, text) == 0,
                  "no signing key in AUTH_KEY_FILE=%s", file ? file : "(unset)");
        free(text);
        loaded = true;
    }
    pthread_mutex_unlock(&lock);
    auth_claims c = {.role = role, .iat = iat, .exp = exp};
    snprintf(c.sub, sizeof c.sub, "%s", user);
    snprintf(c.jti, sizeof c.jti, "test");
    return auth_sign(&key, &c, audience);
}

char *token_for(const char *user, bool operator)
{
    int64_t now = clock_wall_s();
    return mint(user, operator? AUTH_OPERATOR : AUTH_USER, now, now + 900, "shop");
}

char *token_for_claims(const char *user, int64_t iat, int64_t exp, const char *audience)
{
    return mint(user, AUTH_USER, iat, exp, audience);
}

/* The user a request names: /accounts/U..., ?user_id=U, or a body's
 * "user_id"; NULL when none (or not a valid id). Into `out` (65). */
static const char *named_user(const char *path, const char *body, char *out)
{
    out[0] = '\0';
    const char *q = strstr(path, "user_id=");
    if (strncmp(path, "/accounts/", 10) == 0)
        snprintf(out, 65, "%.*s", (int)strcspn(path + 10, "/?"), path + 10);
    else if (q)
        snprintf(out, 65, "%.*s", (int)strcspn(q + 8, "&"), q + 8);
    else if (body) {
        json_t *j = json_loads(body, JSON_DECODE_ANY, NULL);
        const char *u = json_string_value(json_object_get(j, "user_id"));
        if (u)
            snprintf(out, 65, "%s", u);
        json_decref(j);
    }
    return valid_user_id(out) ? out : NULL;
}

int api(resp *r, const char *method, const char *base, const char *path, const char *body,
        const char *const *headers)
{
    /* As whom: the caller's own Authorization header, else act_as's user,
     * else the user the request names, else a bystander (the service
     * checks the input before whose it is). */
    bool has_auth = false;
    for (size_t i = 0; headers && headers[i]; i++)
        has_auth |=
            strncasecmp(headers[i], "Authorization:", 14) == 0 || strcmp(headers[i], NO_TOKEN) == 0;
    char named[65], *token = NULL, auth[AUTH_TOKEN_MAX + 32];
    const char *extra[16] = {NULL};
    size_t n = 0;
    for (size_t i = 0; headers && headers[i] && n < 14; i++)
        if (strcmp(headers[i], NO_TOKEN) != 0)
            extra[n++] = headers[i];
    if (!has_auth) {
        const char *who = acting[0] ? acting : named_user(path, body, named);
        token = token_for(who ? who : "harness-bystander", acting[0] && acting_operator);
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        extra[n++] = auth;
    }
    free(token);
    headers = extra;

    memset(r, 0, sizeof *r);
    char url[1024];
    snprintf(url, sizeof url, "%s%s", base, path);
    size_t len = 0, head_len = 0;
    FILE *out = open_memstream(&r->body, &len), *head = open_memstream(&r->head, &head_len);
    CURL *c = curl_easy_init();
    bool typed = false;
    for (size_t i = 0; headers && headers[i]; i++)
        typed |= strncasecmp(headers[i], "Content-Type:", 13) == 0;
    struct curl_slist *hs =
        typed ? NULL : curl_slist_append(NULL, "Content-Type: application/json");
    for (size_t i = 0; headers && headers[i]; i++)
        hs = curl_slist_append(hs, headers[i]);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, head);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    char error[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK)
        snprintf(r->error, sizeof r->error, "%.60s: %.180s", curl_easy_strerror(rc), error);
    fclose(out);
    fclose(head);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_getinfo(c, CURLINFO_TOTAL_TIME, &r->seconds);
    curl_slist_free_all(hs);
    curl_easy_cleanup(c);
    if (r->body)
        r->json = json_loads(r->body, 0, NULL);
    return rc == CURLE_OK ? 0 : -1;
}

void resp_free(resp *r)
{
    json_decref(r->json);
    free(r->body);
    free(r->head);
    memset(r, 0, sizeof *r);
}

const char *err_code(const resp *r)
{
    const char *code =
        json_string_value(json_object_get(json_object_get(r->json, "error"), "code"));
    return code ? code : "";
}

const char *payments_url(void)
{
    const char *u = getenv("SHOP_PAYMENTS_URL");
    return u ? u : "http://127.0.0.1:18081";
}

int kafka_partitions(void)
{
    static int known;
    if (known)
        return known;
    const char *brokers = getenv("KAFKA_BROKERS");
    cr_assert_not_null(brokers, "KAFKA_BROKERS is not set");
    rd_kafka_t *rk = kafka_producer_new(brokers, "test-metadata", NULL, NULL);
    cr_assert_not_null(rk);
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, MSG_TOPIC_REQUESTS, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, t, &md, 10000);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 && !md->topics[0].err)
        known = md->topics[0].partition_cnt;
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
    kafka_destroy(rk);
    cr_assert_gt(known, 0, "no partitions of %s: %s", MSG_TOPIC_REQUESTS, rd_kafka_err2str(e));
    return known;
}

const char *orders_url(void)
{
    const char *u = getenv("SHOP_ORDERS_URL");
    return u ? u : "http://127.0.0.1:18080";
}

const char *identity_url(void)
{
    const char *u = getenv("SHOP_IDENTITY_URL");
    return u ? u : "http://127.0.0.1:18084";
}

const char *resp_header(const resp *r, const char *name, char *out, size_t len)
{
    size_t n = strlen(name);
    for (const char *line = r->head; line && *line;) {
        const char *end = strstr(line, "\r\n");
        size_t l = end ? (size_t)(end - line) : strlen(line);
        if (l > n && strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *v = line + n + 1;
            v += strspn(v, " ");
            snprintf(out, len, "%.*s", (int)(l - (size_t)(v - line)), v);
            return out;
        }
        line = end ? end + 2 : NULL;
    }
    return NULL;
}

PGconn *identity_db(void)
{
    const char *url = getenv("IDENTITY_DATABASE_URL");
    PGconn *db = PQconnectdb(url ? url : "postgresql://shop@127.0.0.1:54330/identity");
    cr_assert_eq(PQstatus(db), CONNECTION_OK, "identity: %s", PQerrorMessage(db));
    return db;
}

const char *orders_urls(void)
{
    const char *u = getenv("SHOP_ORDERS_URLS");
    return u ? u : orders_url();
}

const char *payments_urls(void)
{
    const char *u = getenv("SHOP_PAYMENTS_URLS");
    return u ? u : payments_url();
}

static PGconn *connect_db(const char *env, const char *fallback)
{
    const char *url = getenv(env);
    PGconn *db = PQconnectdb(url ? url : fallback);
    cr_assert_eq(PQstatus(db), CONNECTION_OK, "%s: %s", env, PQerrorMessage(db));
    return db;
}

PGconn *orders_db(void)
{
    return connect_db("ORDERS_DATABASE_URL", "postgresql://shop@127.0.0.1:54330/orders");
}

PGconn *payments_db(void)
{
    return connect_db("PAYMENTS_DATABASE_URL", "postgresql://shop@127.0.0.1:54330/payments");
}

int64_t db_int(PGconn *db, const char *sql, const char *p1, const char *p2)
{
    const char *params[] = {p1, p2};
    int n = p2 ? 2 : p1 ? 1 : 0;
    PGresult *r = PQexecParams(db, sql, n, NULL, params, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql, PQresultErrorMessage(r));
    cr_assert_eq(PQntuples(r), 1, "%s returned %d rows", sql, PQntuples(r));
    int64_t v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

void unique_name(char *out, size_t len, const char *prefix)
{
    static _Atomic unsigned counter;
    /* TEST_USER_PREFIX: a suite's users share it, so that make reconcile
     * can check them all at its end (scripts/test.sh). */
    const char *suite = getenv("TEST_USER_PREFIX");
    snprintf(out, len, "%s%s-%d-%u-%ld", suite ? suite : "", prefix, (int)getpid(),
             atomic_fetch_add(&counter, 1), (long)time(NULL) % 100000);
}

int stack(const char *cmd)
{
    char line[512];
    const char *root = getenv("SHOP_ROOT");
    /* Its output goes to stderr, unless cmd sends it elsewhere itself. */
    snprintf(line, sizeof line, "exec >&2; %s/scripts/stack.sh %s", root ? root : ".", cmd);
    return system(line);
}

bool wait_until(bool (*cond)(void *), void *arg, int timeout_ms)
{
    for (int waited = 0;; waited += 20) {
        if (cond(arg))
            return true;
        if (waited >= timeout_ms)
            return false;
        usleep(20 * 1000);
    }
}

void account_with(const char *user, int64_t amount)
{
    char body[128], path[128];
    snprintf(body, sizeof body, "{\"user_id\":\"%s\"}", user);
    resp r;
    api(&r, "POST", payments_url(), "/accounts", body, NULL);
    cr_assert_eq(r.status, 201, "create %s: %ld %s", user, r.status, r.body);
    resp_free(&r);
    if (amount <= 0)
        return;
    snprintf(path, sizeof path, "/accounts/%s/deposits", user);
    snprintf(body, sizeof body, "{\"amount\": %lld}", (long long)amount);
    api(&r, "POST", payments_url(), path, body, NULL);
    cr_assert_eq(r.status, 201, "deposit %s: %ld %s", user, r.status, r.body);
    resp_free(&r);
}

long place_order(const char *user, int64_t amount, char *id)
{
    char body[160];
    snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"amount\":%lld,\"description\":\"test\"}",
             user, (long long)amount);
    resp r;
    api(&r, "POST", orders_url(), "/orders", body, NULL);
    long status = r.status;
    if (status == 201 && id)
        snprintf(id, 37, "%s", json_string_value(json_object_get(r.json, "id")));
    resp_free(&r);
    return status;
}

int64_t orders_with(const char *user, const char *status)
{
    PGconn *db = orders_db();
    int64_t n =
        db_int(db, "SELECT count(*) FROM orders WHERE user_id = $1 AND status = $2", user, status);
    PQfinish(db);
    return n;
}

/* Asks to cancel `id` as `user`; the HTTP status (0: no answer). */
static long cancel_as(const char *user, const char *id)
{
    char path[96];
    snprintf(path, sizeof path, "/orders/%s/cancel", id);
    act_as(user);
    resp r;
    long status = api(&r, "POST", orders_url(), path, NULL, NULL) == 0 ? r.status : 0;
    resp_free(&r);
    act_as(NULL);
    return status;
}

/* Refunds half of one of the burst's earlier orders that is paid by now,
 * as a client does: one Idempotency-Key, the same on every retry until a
 * definite answer (a part being killed answers 502/503, or nothing).
 * Returns 1 when it did, 0 when the next candidate is not decided yet, -1
 * when no candidate is left. */
static int refund_one(burst *b)
{
    int done = -1;
    PGconn *o = orders_db();
    for (; b->next_refund < b->nplaced; b->next_refund++) {
        const char *id = b->placed[b->next_refund];
        int64_t state = db_int(o,
                               "SELECT CASE status WHEN 'NEW' THEN 0 WHEN 'FINISHED' THEN 1"
                               " ELSE 2 END FROM orders WHERE id = $1",
                               id, NULL);
        if (state == 0) {
            done = 0; /* not decided yet: next time */
            break;
        }
        if (state == 2)
            continue; /* refused for want of money: nothing to refund */
        char path[96], body[48], key[80];
        snprintf(path, sizeof path, "/orders/%s/refunds", id);
        snprintf(body, sizeof body, "{\"amount\":%lld}", (long long)(b->amount / 2));
        snprintf(key, sizeof key, "Idempotency-Key: refund-%s", id);
        const char *headers[] = {key, NULL};
        long status = 0;
        act_as(b->user);
        for (int attempt = 0; attempt < 120 && (status == 0 || status >= 500); attempt++) {
            if (attempt)
                usleep(250 * 1000);
            resp r;
            status = api(&r, "POST", orders_url(), path, body, headers) == 0 ? r.status : 0;
            int k = atomic_load(&b->refunds_taken);
            if (status == 202 && k < BURST_CANCELS_MAX) {
                snprintf(b->refunds[k], 37, "%s", json_string_value(json_object_get(r.json, "id")));
                atomic_store(&b->refunds_taken, k + 1); /* the drill waits for the first */
            }
            resp_free(&r);
        }
        act_as(NULL);
        cr_assert_eq(status, 202, "refund of paid order %s: %ld", id, status);
        b->next_refund++;
        done = 1;
        break;
    }
    PQfinish(o);
    return done;
}

void *place_orders(void *arg)
{
    burst *b = arg;
    int refunds = 0;
    for (int i = 0; i < b->orders; i++) {
        char id[37] = "";
        long status = place_order(b->user, b->amount, id);
        if (status == 201)
            atomic_fetch_add(&b->accepted, 1);
        else if (status < 100)
            atomic_fetch_add(&b->unanswered, 1);
        if (b->refund_every && i % b->refund_every == b->refund_every - 1)
            refunds += refund_one(b) == 1;
        if (status != 201)
            continue;
        if (!b->cancel_every || i % b->cancel_every != b->cancel_every - 1) {
            if (b->nplaced < BURST_ORDERS_MAX)
                memcpy(b->placed[b->nplaced++], id, sizeof id);
            continue;
        }
        long asked = cancel_as(b->user, id);
        if (asked == 202 && b->cancels_taken < BURST_CANCELS_MAX)
            memcpy(b->taken[b->cancels_taken++], id, sizeof id);
        else if (asked == 409 && b->cancels_refused < BURST_CANCELS_MAX)
            memcpy(b->refused[b->cancels_refused++], id, sizeof id);
    }
    /* Placed faster than paid: the refunds still owed, as orders are paid. */
    for (int tries = 0; b->refund_every && refunds < b->orders / b->refund_every && tries < 3000;
         tries++) {
        int rc = refund_one(b);
        if (rc < 0)
            break;
        if (rc == 0)
            usleep(20 * 1000);
        refunds += rc;
    }
    atomic_store(&b->done, true);
    return NULL;
}

int place_orders_at_once(const char *user, int threads, int each, int64_t amount)
{
    pthread_t th[32];
    burst b[32];
    cr_assert(threads > 0 && threads <= 32);
    for (int i = 0; i < threads; i++) {
        b[i] = (burst){.user = user, .orders = each, .amount = amount};
        pthread_create(&th[i], NULL, place_orders, &b[i]);
    }
    int accepted = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        accepted += atomic_load(&b[i].accepted);
    }
    return accepted;
}

void burst_assert_refunds(const burst *b)
{
    PGconn *o = orders_db();
    for (int i = 0; i < atomic_load(&b->refunds_taken); i++)
        cr_assert_eq(db_int(o,
                            "SELECT count(*) FROM refunds WHERE id = $1 AND status = 'COMPLETED'",
                            b->refunds[i], NULL),
                     1, "refund %s, answered 202, did not complete", b->refunds[i]);
    PQfinish(o);
}

void burst_assert_cancels(const burst *b)
{
    PGconn *o = orders_db();
    for (int i = 0; i < b->cancels_taken; i++)
        cr_assert_eq(db_int(o, "SELECT count(*) FROM orders WHERE id = $1 AND status = 'CANCELLED'",
                            b->taken[i], NULL),
                     1, "order %s, whose cancel was taken, did not end CANCELLED", b->taken[i]);
    for (int i = 0; i < b->cancels_refused; i++)
        cr_assert_eq(db_int(o, "SELECT count(*) FROM orders WHERE id = $1 AND status = 'FINISHED'",
                            b->refused[i], NULL),
                     1, "order %s, not cancellable (paid), is not FINISHED", b->refused[i]);
    PQfinish(o);
}

void db_ok(PGconn *db, const char *sql, const char *param)
{
    PGresult *r = PQexecParams(db, sql, param ? 1 : 0, NULL, param ? &param : NULL, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    cr_assert(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", sql,
              PQresultErrorMessage(r));
    PQclear(r);
}

void test_trigger(PGconn *db, const char *name, const char *table, const char *body, bool at_commit)
{
    char *sql = NULL;
    cr_assert(asprintf(&sql,
                       "CREATE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN %s"
                       " RETURN NEW; END $f$",
                       name, body) > 0);
    db_ok(db, sql, NULL);
    free(sql);
    cr_assert(asprintf(&sql,
                       at_commit ? "CREATE CONSTRAINT TRIGGER %s AFTER INSERT ON %s DEFERRABLE"
                                   " INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION %s()"
                                 : "CREATE TRIGGER %s BEFORE INSERT ON %s FOR EACH ROW"
                                   " EXECUTE FUNCTION %s()",
                       name, table, name) > 0);
    db_ok(db, sql, NULL);
    free(sql);
}

void test_trigger_drop(PGconn *db, const char *name, const char *table)
{
    char sql[256];
    snprintf(sql, sizeof sql, "DROP TRIGGER IF EXISTS %s ON %s; DROP FUNCTION IF EXISTS %s()", name,
             table, name);
    PQclear(PQexec(db, sql));
}

int64_t redrives_of(const char *user)
{
    PGconn *db = orders_db();
    int64_t n = db_int(db,
                       "SELECT (SELECT coalesce(sum(redrive_count), 0) FROM orders"
                       "        WHERE user_id = $1)"
                       "     + (SELECT coalesce(sum(redrive_count), 0) FROM refunds"
                       "        WHERE user_id = $1)",
                       user, NULL);
    PQfinish(db);
    return n;
}

int64_t outbox_rows_with_key(const char *key)
{
    PGconn *db = orders_db();
    int64_t n = db_int(db, "SELECT count(*) FROM outbox WHERE key = $1", key, NULL);
    PQfinish(db);
    return n;
}

typedef struct new_wait {
    const char *user;
    int64_t n;
} new_wait;

static bool enough_new(void *arg)
{
    new_wait *w = arg;
    return orders_with(w->user, "NEW") >= w->n;
}

bool at_least_new(const char *user, int64_t n, int timeout_ms)
{
    new_wait w = {user, n};
    return wait_until(enough_new, &w, timeout_ms);
}

typedef struct final_wait {
    PGconn *db;
    const char *user;
} final_wait;

static bool none_new(void *arg)
{
    final_wait *w = arg;
    return db_int(w->db,
                  "SELECT (SELECT count(*) FROM orders WHERE user_id = $1 AND status = 'NEW')"
                  " + (SELECT count(*) FROM refunds WHERE user_id = $1 AND status = 'PENDING')",
                  w->user, NULL) == 0;
}

bool all_final(const char *user, int timeout_ms)
{
    final_wait w = {.db = orders_db(), .user = user};
    bool ok = wait_until(none_new, &w, timeout_ms);
    PQfinish(w.db);
    return ok;
}

int reconcile(const char *users, char **out)
{
    char *cmd = NULL;
    size_t len = 0;
    const char *root = getenv("SHOP_ROOT");
    cr_assert(asprintf(&cmd, "RECONCILE_USERS='%s' '%s/scripts/reconcile.sh' 2>&1", users,
                       root ? root : ".") > 0);
    FILE *p = popen(cmd, "r"), *text = open_memstream(out, &len);
    cr_assert(p && text);
    char line[512];
    while (fgets(line, sizeof line, p))
        fputs(line, text);
    int status = pclose(p);
    fclose(text);
    free(cmd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void assert_money_adds_up(const char *user)
{
    char *out = NULL;
    cr_assert_eq(reconcile(user, &out), 0, "the books of %s do not hold:\n%s", user, out);
    free(out);
}

bool payments_count_reached(void *arg)
{
    const count_wait *w = arg;
    return metric_sum(payments_urls(), w->series) >= w->target;
}

void random_uuid(char *out)
{
    unsigned char b[16];
    cr_assert_eq(getrandom(b, sizeof b, 0), (ssize_t)sizeof b);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-4%x%02x-%x%x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6] & 15, b[7], 8 | (b[8] & 3), b[8] >> 4, b[9], b[10],
             b[11], b[12], b[13], b[14], b[15]);
}

int64_t metric(const char *base_url, const char *series)
{
    resp r;
    api(&r, "GET", base_url, "/metrics", NULL, NULL);
    cr_assert_eq(r.status, 200);
    int64_t v = -1;
    size_t n = strlen(series);
    for (char *line = r.body; line && *line;
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        if (strncmp(line, series, n) == 0 && line[n] == ' ')
            v = strtoll(line + n + 1, NULL, 10);
    resp_free(&r);
    return v;
}

int64_t metric_sum(const char *urls, const char *series)
{
    char list[512];
    int64_t sum = 0;
    snprintf(list, sizeof list, "%s", urls);
    for (char *save = NULL, *u = strtok_r(list, " ", &save); u; u = strtok_r(NULL, " ", &save)) {
        int64_t v = metric(u, series);
        sum += v > 0 ? v : 0;
    }
    return sum;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    if (m->err)
        atomic_fetch_add((atomic_int *)opaque, 1);
}

/* Produces n messages, message i onto partitions[i] (RD_KAFKA_PARTITION_UA:
 * its key's), and waits until the broker has every one. A producer can fail
 * for good after the broker lost its data (the broker hands out producer
 * ids from 0 again, one an older producer still uses, and refuses their
 * sequence numbers): flush returns all the same, so the delivery reports
 * tell, and a new producer sends everything again (a duplicate is what
 * the consumers absorb anyway). */
static void produce_each(const char *topic, int n, const int32_t *partitions, const char *key,
                         const char *const *payloads)
{
    const char *brokers = getenv("KAFKA_BROKERS");
    cr_assert_not_null(brokers, "KAFKA_BROKERS is not set (scripts/test.sh sets it)");
    for (int attempt = 0;; attempt++) {
        atomic_int failed = 0;
        rd_kafka_t *p = kafka_producer_new(brokers, "test-injector", on_delivery, &failed);
        cr_assert_not_null(p);
        for (int i = 0; i < n; i++)
            cr_assert_eq(
                rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partitions[i]),
                                  RD_KAFKA_V_KEY(key, strlen(key)),
                                  RD_KAFKA_V_VALUE((void *)payloads[i], strlen(payloads[i])),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                RD_KAFKA_RESP_ERR_NO_ERROR);
        cr_assert_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
        kafka_destroy(p);
        if (atomic_load(&failed) == 0)
            return;
        cr_assert_lt(attempt, 4, "%d of %d message(s) never reached %s", atomic_load(&failed), n,
                     topic);
    }
}

static void produce(const char *topic, const char *key, const char *payload, int copies)
{
    int32_t *partitions = calloc((size_t)copies, sizeof *partitions);
    const char **payloads = calloc((size_t)copies, sizeof *payloads);
    cr_assert(partitions && payloads);
    for (int i = 0; i < copies; i++) {
        partitions[i] = RD_KAFKA_PARTITION_UA;
        payloads[i] = payload;
    }
    produce_each(topic, copies, partitions, key, payloads);
    free(partitions);
    free(payloads);
}

void inject_raw(const char *topic, const char *key, const char *payload)
{
    produce(topic, key, payload, 1);
}

void inject_cancel(const char *order_id, const char *user, int64_t amount)
{
    payment_msg m = {.type = MSG_PAYMENT_CANCEL, .amount = amount};
    snprintf(m.order_id, sizeof m.order_id, "%s", order_id);
    snprintf(m.user_id, sizeof m.user_id, "%s", user);
    char *payload = msg_encode(&m);
    produce(MSG_TOPIC_REQUESTS, user, payload, 1);
    free(payload);
}

void inject_refund(const char *refund_id, const char *order_id, const char *user, int64_t amount,
                   int copies)
{
    payment_msg m = {.type = MSG_REFUND_REQUESTED, .amount = amount};
    snprintf(m.refund_id, sizeof m.refund_id, "%s", refund_id);
    snprintf(m.order_id, sizeof m.order_id, "%s", order_id);
    snprintf(m.user_id, sizeof m.user_id, "%s", user);
    char *payload = msg_encode(&m);
    produce(MSG_TOPIC_REQUESTS, user, payload, copies);
    free(payload);
}

void inject_request(const char *order_id, const char *user, int64_t amount, int copies)
{
    payment_msg m = {.type = MSG_PAYMENT_REQUESTED, .amount = amount};
    snprintf(m.order_id, sizeof m.order_id, "%s", order_id);
    snprintf(m.user_id, sizeof m.user_id, "%s", user);
    char *payload = msg_encode(&m);
    produce(MSG_TOPIC_REQUESTS, user, payload, copies);
    free(payload);
}

/* One payment.requested for each order, request i onto to(i). */
static void inject_requests_to(const char (*order_ids)[37], int n, const char *user, int64_t amount,
                               bool spread)
{
    int partitions = spread ? kafka_partitions() : 1;
    int32_t *to = calloc((size_t)n, sizeof *to);
    char **payloads = calloc((size_t)n, sizeof *payloads);
    cr_assert(to && payloads);
    for (int i = 0; i < n; i++) {
        payment_msg m = {.type = MSG_PAYMENT_REQUESTED, .amount = amount};
        snprintf(m.order_id, sizeof m.order_id, "%s", order_ids[i]);
        snprintf(m.user_id, sizeof m.user_id, "%s", user);
        to[i] = spread ? i % partitions : RD_KAFKA_PARTITION_UA;
        payloads[i] = msg_encode(&m);
    }
    produce_each(MSG_TOPIC_REQUESTS, n, to, user, (const char *const *)payloads);
    for (int i = 0; i < n; i++)
        free(payloads[i]);
    free(payloads);
    free(to);
}

void inject_requests_spread(const char (*order_ids)[37], int n, const char *user, int64_t amount)
{
    inject_requests_to(order_ids, n, user, amount, true);
}

void inject_requests(const char (*order_ids)[37], int n, const char *user, int64_t amount)
{
    inject_requests_to(order_ids, n, user, amount, false);
}

void insert_order(const char *user, int64_t amount, char *id)
{
    PGconn *db = orders_db();
    char amt[24];
    snprintf(amt, sizeof amt, "%lld", (long long)amount);
    const char *params[] = {user, amt};
    PGresult *r = PQexecParams(db,
                               "INSERT INTO orders (user_id, amount, description, next_redrive_at)"
                               " VALUES ($1, $2, 'inserted by a test', now() + interval '1 hour')"
                               " RETURNING id",
                               2, NULL, params, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    snprintf(id, 37, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(db);
}
