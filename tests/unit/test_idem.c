/* Idempotency-Keys (lib/idem.h) without a database: what a key remembers
 * of its request, and how a request's key is read and scoped. Claiming
 * and storing run against the real PostgreSQL (tests/integration). */
#include "lib/idem.h"
#include "served.h"

#include <criterion/criterion.h>

static char *fingerprint(const char *method, const char *path, const char *body, bool parse)
{
    http_req req = {.method = method, .path = path, .body = body, .body_len = strlen(body)};
    if (parse)
        req.json = json_loads(body, 0, NULL);
    char *fp = idem_fingerprint(&req);
    json_decref(req.json);
    cr_assert_not_null(fp);
    return fp;
}

Test(idem, a_retry_with_its_members_in_another_order_is_the_same_request)
{
    char *a = fingerprint("POST", "/orders", "{\"amount\": 5, \"description\": \"x\"}", true);
    char *b = fingerprint("POST", "/orders", "{\"description\":\"x\",\"amount\":5}", true);
    cr_assert_str_eq(a, b);
    free(a);
    free(b);
}

Test(idem, another_body_path_or_method_is_another_request)
{
    char *base = fingerprint("POST", "/orders", "{\"amount\": 5}", true);
    const char *other[][3] = {{"POST", "/orders", "{\"amount\": 6}"},
                              {"POST", "/accounts/a/deposits", "{\"amount\": 5}"},
                              {"PUT", "/orders", "{\"amount\": 5}"}};
    for (size_t i = 0; i < sizeof other / sizeof *other; i++) {
        char *fp = fingerprint(other[i][0], other[i][1], other[i][2], true);
        cr_assert_str_neq(base, fp, "%s %s %s", other[i][0], other[i][1], other[i][2]);
        free(fp);
    }
    free(base);
    /* A body never parsed is kept as sent. */
    char *raw = fingerprint("POST", "/x", "not json", false);
    cr_assert_str_eq(raw, "POST /x\nnot json");
    free(raw);
}

/* Answers what idem_scoped_key made of the request's header. */
static void scoped(http_req *req, http_res *res)
{
    char key[HTTP_IDEM_SCOPED_MAX];
    int rc = idem_scoped_key(req, res, "alice", key);
    if (rc >= 0)
        http_json(res, 200, json_pack("{s:i,s:s}", "rc", rc, "key", rc ? key : ""));
}

static const http_route routes[] = {{"POST", "/key", scoped, NULL}};

Test(idem, a_key_is_scoped_to_its_user_and_a_malformed_one_is_a_400)
{
    int port;
    http_server *srv = served_start(routes, 1, NULL, &port);
    cr_assert_not_null(srv);
    served_answer a;
    served_request(port, "POST", "/key", "Idempotency-Key: buy-42", &a);
    cr_assert_eq(a.status, 200);
    cr_assert_not_null(strstr(a.body, "\"key\":\"alice:buy-42\""), "%s", a.body);
    served_request(port, "POST", "/key", NULL, &a);
    cr_assert_eq(a.status, 200);
    cr_assert_not_null(strstr(a.body, "\"rc\":0"), "no key: %s", a.body);
    char too_long[300] = "Idempotency-Key: ";
    memset(too_long + strlen(too_long), 'k', 256);
    served_request(port, "POST", "/key", too_long, &a);
    cr_assert_eq(a.status, 400, "256 characters: %ld", a.status);
    cr_assert_not_null(strstr(a.body, "invalid_idempotency_key"), "%s", a.body);
    served_request(port, "POST", "/key", "Idempotency-Key: caf\xc3\xa9", &a);
    cr_assert_eq(a.status, 400, "not ASCII: %ld", a.status);
    http_stop(srv);
}
