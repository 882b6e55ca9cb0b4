/* The accounts API of the payments service, through real HTTP, against the
 * real database. */
#include "harness.h"

#include <criterion/criterion.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static void create_account(const char *user)
{
    char body[128];
    snprintf(body, sizeof body, "{\"user_id\":\"%s\"}", user);
    resp r;
    cr_assert_eq(api(&r, "POST", payments_url(), "/accounts", body, NULL), 0);
    cr_assert_eq(r.status, 201, "create %s: %ld %s", user, r.status, r.body);
    resp_free(&r);
}

static int64_t balance_of(const char *user)
{
    char path[128];
    snprintf(path, sizeof path, "/accounts/%s", user);
    resp r;
    cr_assert_eq(api(&r, "GET", payments_url(), path, NULL, NULL), 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    int64_t b = json_integer_value(json_object_get(r.json, "balance"));
    resp_free(&r);
    return b;
}

Test(accounts, create_read_and_deposit)
{
    char user[64], path[128], body[128];
    unique_name(user, sizeof user, "acct");
    snprintf(body, sizeof body, "{\"user_id\":\"%s\"}", user);

    resp r;
    api(&r, "POST", payments_url(), "/accounts", body, NULL);
    cr_assert_eq(r.status, 201, "%s", r.body);
    cr_assert_str_eq(json_string_value(json_object_get(r.json, "user_id")), user);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "balance")), 0);
    cr_assert(json_is_string(json_object_get(r.json, "created_at")));
    cr_assert(json_is_string(json_object_get(r.json, "updated_at")));
    cr_assert_eq(json_object_size(r.json), 4);
    resp_free(&r);

    api(&r, "POST", payments_url(), "/accounts", body, NULL);
    cr_assert_eq(r.status, 409);
    cr_assert_str_eq(err_code(&r), "account_exists");
    resp_free(&r);

    snprintf(path, sizeof path, "/accounts/%s/deposits", user);
    api(&r, "POST", payments_url(), path, "{\"amount\": 250}", NULL);
    cr_assert_eq(r.status, 201, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "balance")), 250);
    resp_free(&r);
    api(&r, "POST", payments_url(), path, "{\"amount\": 1000000000000}", NULL);
    cr_assert_eq(r.status, 201, "%s", r.body);
    resp_free(&r);
    cr_assert_eq(balance_of(user), 1000000000250);

    PGconn *db = payments_db();
    cr_assert_eq(db_int(db, "SELECT count(*) FROM ledger WHERE user_id = $1", user, NULL), 2);
    cr_assert_eq(db_int(db, "SELECT sum(amount) FROM ledger WHERE user_id = $1", user, NULL),
                 1000000000250);
    PQfinish(db);
}

Test(accounts, unknown_account_is_404)
{
    resp r;
    api(&r, "GET", payments_url(), "/accounts/nobody-here-ever", NULL, NULL);
    cr_assert_eq(r.status, 404);
    cr_assert_str_eq(err_code(&r), "account_not_found");
    resp_free(&r);
    api(&r, "POST", payments_url(), "/accounts/nobody-here-ever/deposits", "{\"amount\": 5}", NULL);
    cr_assert_eq(r.status, 404);
    cr_assert_str_eq(err_code(&r), "account_not_found");
    resp_free(&r);
}

Test(accounts, bad_input_gets_4xx_and_changes_nothing)
{
    char user[64], deposits[128];
    unique_name(user, sizeof user, "bad");
    create_account(user);
    snprintf(deposits, sizeof deposits, "/accounts/%s/deposits", user);
    char big[20000];
    memset(big, ' ', sizeof big - 1);
    big[0] = '{';
    big[sizeof big - 2] = '}';
    big[sizeof big - 1] = '\0';

    struct {
        const char *method, *path, *body;
        long status;
        const char *code;
    } cases[] = {
        {"POST", "/accounts", "{not json", 400, "invalid_json"},
        /* (An empty body is no error: it asks for the caller's own account.) */
        {"POST", "/accounts", "[]", 400, "invalid_body"},
        {"POST", "/accounts", "{\"user_id\": 7}", 400, "invalid_type"},
        {"POST", "/accounts", "{\"user_id\": \"a b\"}", 400, "invalid_user_id"},
        {"POST", "/accounts", "{\"user_id\": \"\"}", 400, "invalid_user_id"},
        {"POST", "/accounts",
         "{\"user_id\": \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}",
         400, "invalid_user_id"},
        {"POST", "/accounts", "{\"user_id\": \"ok\", \"admin\": true}", 400, "unknown_field"},
        {"POST", deposits, "{\"amount\": 0}", 400, "invalid_amount"},
        {"POST", deposits, "{\"amount\": -5}", 400, "invalid_amount"},
        {"POST", deposits, "{\"amount\": 1.5}", 400, "invalid_type"},
        {"POST", deposits, "{\"amount\": \"5\"}", 400, "invalid_type"},
        {"POST", deposits, "{\"amount\": 1000000000001}", 400, "invalid_amount"},
        {"POST", deposits, "{\"amount\": 123456789012345678901234567890}", 400, "invalid_json"},
        {"POST", deposits, "{}", 400, "missing_field"},
        {"POST", deposits, big, 413, "body_too_large"},
        {"POST", "/accounts/bad%20user/deposits", "{\"amount\": 5}", 400, "invalid_user_id"},
        {"DELETE", "/accounts", NULL, 405, "method_not_allowed"},
        {"PUT", deposits, "{\"amount\": 5}", 405, "method_not_allowed"},
        {"GET", "/nowhere", NULL, 404, "not_found"},
    };

    PGconn *db = payments_db();
    int64_t accounts = db_int(db, "SELECT count(*) FROM accounts", NULL, NULL);
    int64_t ledger = db_int(db, "SELECT count(*) FROM ledger", NULL, NULL);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        resp r;
        cr_assert_eq(api(&r, cases[i].method, payments_url(), cases[i].path, cases[i].body, NULL),
                     0, "case %zu", i);
        cr_assert_eq(r.status, cases[i].status, "case %zu (%s %s): got %ld %s", i, cases[i].method,
                     cases[i].path, r.status, r.body);
        cr_assert_str_eq(err_code(&r), cases[i].code, "case %zu: %s", i, r.body);
        cr_assert(json_is_string(json_object_get(json_object_get(r.json, "error"), "message")));
        resp_free(&r);
    }
    cr_assert_eq(db_int(db, "SELECT count(*) FROM accounts", NULL, NULL), accounts);
    cr_assert_eq(db_int(db, "SELECT count(*) FROM ledger", NULL, NULL), ledger);
    cr_assert_eq(balance_of(user), 0);
    PQfinish(db);
}

typedef struct deposit_job {
    const char *path;
    int amount;
    const char *key; /* Idempotency-Key or NULL */
    long status;
    char *body;
} deposit_job;

static void *run_deposit(void *arg)
{
    deposit_job *j = arg;
    char body[64], header[300];
    snprintf(body, sizeof body, "{\"amount\": %d}", j->amount);
    snprintf(header, sizeof header, "Idempotency-Key: %s", j->key ? j->key : "");
    const char *headers[] = {header, NULL};
    resp r;
    api(&r, "POST", payments_url(), j->path, body, j->key ? headers : NULL);
    j->status = r.status;
    j->body = r.body;
    r.body = NULL;
    resp_free(&r);
    return NULL;
}

Test(accounts, forty_concurrent_deposits_all_count)
{
    char user[64], path[128];
    unique_name(user, sizeof user, "conc");
    create_account(user);
    snprintf(path, sizeof path, "/accounts/%s/deposits", user);
    enum { N = 40 };
    pthread_t th[N];
    deposit_job jobs[N];
    int64_t expected = 0;
    for (int i = 0; i < N; i++) {
        jobs[i] = (deposit_job){.path = path, .amount = i + 1};
        expected += i + 1;
        pthread_create(&th[i], NULL, run_deposit, &jobs[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(jobs[i].status, 201, "deposit %d: %ld %s", i, jobs[i].status, jobs[i].body);
        free(jobs[i].body);
    }
    cr_assert_eq(balance_of(user), expected);
    PGconn *db = payments_db();
    cr_assert_eq(db_int(db, "SELECT count(*) FROM ledger WHERE user_id = $1", user, NULL), N);
    cr_assert_eq(db_int(db, "SELECT sum(amount) FROM ledger WHERE user_id = $1", user, NULL),
                 expected);
    PQfinish(db);
}

Test(accounts, idempotency_key_replays_and_rejects_reuse)
{
    char user[64], path[128], key[80], header[100];
    unique_name(user, sizeof user, "idem");
    unique_name(key, sizeof key, "key");
    create_account(user);
    snprintf(path, sizeof path, "/accounts/%s/deposits", user);
    snprintf(header, sizeof header, "Idempotency-Key: %s", key);
    const char *headers[] = {header, NULL};

    resp first, again, other;
    api(&first, "POST", payments_url(), path, "{\"amount\": 70}", headers);
    cr_assert_eq(first.status, 201, "%s", first.body);
    /* Same request, other whitespace and member order: the same request. */
    api(&again, "POST", payments_url(), path, "{ \"amount\" : 70 }", headers);
    cr_assert_eq(again.status, 201);
    cr_assert_str_eq(again.body, first.body, "a replay returns the stored body");
    api(&other, "POST", payments_url(), path, "{\"amount\": 71}", headers);
    cr_assert_eq(other.status, 422);
    cr_assert_str_eq(err_code(&other), "idempotency_key_reused");
    resp_free(&first);
    resp_free(&again);
    resp_free(&other);

    /* Same key on another path is another request too. */
    act_as(user);
    api(&other, "POST", payments_url(), "/accounts", "{}", headers);
    cr_assert_eq(other.status, 422, "%s", other.body);
    resp_free(&other);
    act_as(NULL);

    const char *bad_key[] = {"Idempotency-Key: has space", NULL};
    api(&other, "POST", payments_url(), path, "{\"amount\": 70}", bad_key);
    cr_assert_eq(other.status, 400);
    cr_assert_str_eq(err_code(&other), "invalid_idempotency_key");
    resp_free(&other);

    cr_assert_eq(balance_of(user), 70, "the money moved once");
    PGconn *db = payments_db();
    cr_assert_eq(db_int(db, "SELECT count(*) FROM ledger WHERE user_id = $1", user, NULL), 1);
    /* Keys are kept per user: "user:key". */
    char scoped[200];
    snprintf(scoped, sizeof scoped, "%s:%s", user, key);
    cr_assert_eq(db_int(db, "SELECT status FROM idempotency_keys WHERE key = $1", scoped, NULL),
                 201);
    PQfinish(db);
}

Test(accounts, concurrent_retries_with_one_key_move_money_once)
{
    char user[64], path[128], key[80];
    unique_name(user, sizeof user, "idemc");
    unique_name(key, sizeof key, "keyc");
    create_account(user);
    snprintf(path, sizeof path, "/accounts/%s/deposits", user);
    enum { N = 12 };
    pthread_t th[N];
    deposit_job jobs[N];
    for (int i = 0; i < N; i++) {
        jobs[i] = (deposit_job){.path = path, .amount = 33, .key = key};
        pthread_create(&th[i], NULL, run_deposit, &jobs[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(jobs[i].status, 201, "%ld %s", jobs[i].status, jobs[i].body);
        cr_assert_str_eq(jobs[i].body, jobs[0].body);
    }
    for (int i = 0; i < N; i++)
        free(jobs[i].body);
    cr_assert_eq(balance_of(user), 33);
}

Test(accounts, idempotent_account_creation)
{
    char user[64], key[80], header[100], body[128];
    unique_name(user, sizeof user, "idemacct");
    unique_name(key, sizeof key, "keya");
    snprintf(header, sizeof header, "Idempotency-Key: %s", key);
    snprintf(body, sizeof body, "{\"user_id\":\"%s\"}", user);
    const char *headers[] = {header, NULL};
    resp a, b;
    api(&a, "POST", payments_url(), "/accounts", body, headers);
    api(&b, "POST", payments_url(), "/accounts", body, headers);
    cr_assert_eq(a.status, 201);
    cr_assert_eq(b.status, 201, "a retry is not a conflict: %s", b.body);
    cr_assert_str_eq(a.body, b.body);
    resp_free(&a);
    resp_free(&b);
}

static size_t discard(char *d, size_t s, size_t n, void *u)
{
    (void)d, (void)u;
    return s * n;
}

Test(http, keep_alive_reuses_the_connection)
{
    char url[256];
    snprintf(url, sizeof url, "%s/healthz", payments_url());
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    long connects = -1;
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(curl_easy_perform(c), CURLE_OK);
        curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &connects);
        if (i > 0)
            cr_assert_eq(connects, 0, "request %d opened a new connection", i);
    }
    curl_easy_cleanup(c);
}

Test(http, health_readiness_metrics_and_request_id)
{
    resp r;
    api(&r, "GET", payments_url(), "/readyz", NULL, NULL);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_str_eq(
        json_string_value(json_object_get(json_object_get(r.json, "checks"), "database")), "ok");
    cr_assert_str_eq(
        json_string_value(json_object_get(json_object_get(r.json, "checks"), "broker")), "ok");
    resp_free(&r);

    api(&r, "GET", payments_url(), "/accounts/metrics-probe", NULL, NULL);
    resp_free(&r);
    api(&r, "GET", payments_url(), "/metrics", NULL, NULL);
    cr_assert_eq(r.status, 200);
    cr_assert_not_null(strstr(r.body, "# TYPE http_request_duration_seconds histogram"));
    cr_assert_not_null(strstr(r.body, "http_request_duration_seconds_count{method=\"GET\","
                                      "route=\"/accounts/{user_id}\",status=\"404\"}"),
                       "%s", r.body);
    cr_assert_not_null(strstr(r.body, "le=\"+Inf\""));
    resp_free(&r);
}
