#include "harness.h"

#include <criterion/criterion.h>
#include <curl/curl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
    FILE *out = arg;
    return fwrite(data, size, n, out);
}

int api(resp *r, const char *method, const char *base, const char *path, const char *body,
        const char *const *headers)
{
    memset(r, 0, sizeof *r);
    char url[1024];
    snprintf(url, sizeof url, "%s%s", base, path);
    size_t len = 0;
    FILE *out = open_memstream(&r->body, &len);
    CURL *c = curl_easy_init();
    struct curl_slist *hs = curl_slist_append(NULL, "Content-Type: application/json");
    for (size_t i = 0; headers && headers[i]; i++)
        hs = curl_slist_append(hs, headers[i]);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    CURLcode rc = curl_easy_perform(c);
    fclose(out);
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

PGconn *payments_db(void)
{
    const char *url = getenv("PAYMENTS_DATABASE_URL");
    PGconn *db = PQconnectdb(url ? url : "postgresql://shop@127.0.0.1:54330/payments");
    cr_assert_eq(PQstatus(db), CONNECTION_OK, "payments database: %s", PQerrorMessage(db));
    return db;
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
    snprintf(out, len, "%s-%d-%u-%ld", prefix, (int)getpid(), atomic_fetch_add(&counter, 1),
             (long)time(NULL) % 100000);
}

int stack(const char *cmd)
{
    char line[512];
    const char *root = getenv("SHOP_ROOT");
    snprintf(line, sizeof line, "%s/scripts/stack.sh %s >&2", root ? root : ".", cmd);
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
