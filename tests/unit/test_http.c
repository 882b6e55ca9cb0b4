/* The pure parts of the HTTP layer: routing, request ids, body shapes. */
#include "lib/http.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

Test(http, matches_literal_and_param_segments)
{
    char buf[128];
    const char *p[HTTP_MAX_PARAMS];
    cr_assert_eq(http_match("/accounts", "/accounts", buf, sizeof buf, p, 4), 0);
    cr_assert_eq(
        http_match("/accounts/{id}/deposits", "/accounts/bob/deposits", buf, sizeof buf, p, 4), 1);
    cr_assert_str_eq(p[0], "bob");
    cr_assert_eq(http_match("/a/{x}/b/{y}", "/a/1/b/22", buf, sizeof buf, p, 4), 2);
    cr_assert_str_eq(p[0], "1");
    cr_assert_str_eq(p[1], "22");
}

Test(http, rejects_near_misses)
{
    char buf[128];
    const char *p[HTTP_MAX_PARAMS];
    cr_assert_eq(http_match("/accounts", "/accounts/", buf, sizeof buf, p, 4), -ENOENT);
    cr_assert_eq(http_match("/accounts", "/account", buf, sizeof buf, p, 4), -ENOENT);
    cr_assert_eq(http_match("/accounts/{id}", "/accounts/", buf, sizeof buf, p, 4), -ENOENT,
                 "an empty param does not match");
    cr_assert_eq(http_match("/accounts/{id}", "/accounts/a/b", buf, sizeof buf, p, 4), -ENOENT);
    cr_assert_eq(http_match("/accounts/{id}", "/accountsX/a", buf, sizeof buf, p, 4), -ENOENT);
    cr_assert_eq(http_match("/x/{id}", "/x/abcdef", buf, 4, p, 4), -ENOENT, "buffer too small");
}

Test(http, request_ids)
{
    cr_assert(http_request_id_valid("abc-123_X.y:z"));
    cr_assert_not(http_request_id_valid(""));
    cr_assert_not(http_request_id_valid("has space"));
    cr_assert_not(http_request_id_valid("new\nline"));
    char long_id[80];
    memset(long_id, 'a', 65);
    long_id[65] = '\0';
    cr_assert_not(http_request_id_valid(long_id));
}

static int unpack_amount(const char *body, http_res *res, json_int_t *amount)
{
    http_req req = {.body = body, .body_len = strlen(body)};
    int rc = http_body_unpack(&req, res, "{s:I}", "amount", amount);
    json_decref(req.json);
    return rc;
}

static const char *error_code(const http_res *res)
{
    return json_string_value(json_object_get(json_object_get(res->json, "error"), "code"));
}

Test(http, body_shapes_are_checked_strictly)
{
    struct {
        const char *body, *code;
    } bad[] = {
        {"", "missing_body"},
        {"{", "invalid_json"},
        {"[1]", "invalid_body"},
        {"{}", "missing_field"},
        {"{\"amount\": \"10\"}", "invalid_type"},
        {"{\"amount\": 1.5}", "invalid_type"},
        {"{\"amount\": 1e300}", "invalid_type"}, /* integral, but past 2^53: not exact */
        {"{\"amount\": 10, \"extra\": 1}", "unknown_field"},
        {"{\"amount\": 10, \"amount\": 11}", "invalid_json"},
        {"{\"amount\": 99999999999999999999999}", "invalid_json"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        http_res res = {0};
        json_int_t amount = 0;
        cr_assert_lt(unpack_amount(bad[i].body, &res, &amount), 0, "%s", bad[i].body);
        cr_assert_eq(res.status, 400, "%s", bad[i].body);
        cr_assert_str_eq(error_code(&res), bad[i].code, "%s", bad[i].body);
        cr_assert_not_null(json_object_get(json_object_get(res.json, "error"), "message"));
        json_decref(res.json);
    }
    http_res res = {0};
    json_int_t amount = 0;
    cr_assert_eq(unpack_amount("{\"amount\": 250}", &res, &amount), 0);
    cr_assert_eq(amount, 250);
    /* JSON Schema's integer: a number without a fractional part, however
     * written (the OpenAPI documents say `integer`; schemathesis sends 25.0). */
    cr_assert_eq(unpack_amount("{\"amount\": 25.0}", &res, &amount), 0);
    cr_assert_eq(amount, 25);
    cr_assert_eq(unpack_amount("{\"amount\": 1e3}", &res, &amount), 0);
    cr_assert_eq(amount, 1000);
    cr_assert_eq(res.status, 0);
}

Test(http, error_body_has_the_agreed_shape)
{
    http_res res = {0};
    http_error(&res, 409, "account_exists", "user %s already has one", "bob");
    cr_assert_eq(res.status, 409);
    char *text = json_dumps(res.json, JSON_COMPACT | JSON_PRESERVE_ORDER);
    cr_assert_str_eq(
        text, "{\"error\":{\"code\":\"account_exists\",\"message\":\"user bob already has one\"}}");
    free(text);
    json_decref(res.json);
}

/* A second server on a port that is taken must fail, not share the port
 * (SO_REUSEPORT would let the kernel split the traffic between them). */
Test(http, a_second_server_on_a_taken_port_fails)
{
    http_config cfg = {
        .host = "127.0.0.1", .port = 0, .threads = 1, .max_body = 1024, .timeout_s = 5};
    /* A free port: bind to 0 and read what the kernel chose. */
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert_eq(bind(probe, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(getsockname(probe, (struct sockaddr *)&a, &len), 0);
    cfg.port = ntohs(a.sin_port);
    close(probe);

    http_server *first = http_start(&cfg, NULL, 0, NULL, NULL);
    cr_assert_not_null(first, "the first server listens on %d", cfg.port);
    http_server *second = http_start(&cfg, NULL, 0, NULL, NULL);
    cr_assert_null(second, "a second server took port %d too", cfg.port);
    http_stop(second);
    http_stop(first);
}
