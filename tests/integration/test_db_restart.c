/* The payments service keeps answering while its database restarts: 503
 * within a second while it is down, and back to work by itself, without a
 * restart of the service, when it returns. */
#include "harness.h"

#include <criterion/criterion.h>
#include <stdio.h>

static char user[64], account_path[128], deposit_path[128];

static bool account_readable(void *arg)
{
    (void)arg;
    resp r;
    api(&r, "GET", payments_url(), account_path, NULL, NULL);
    bool ok = r.status == 200;
    resp_free(&r);
    return ok;
}

Test(db_restart, service_answers_503_then_recovers_by_itself, .timeout = 90)
{
    unique_name(user, sizeof user, "restart");
    snprintf(account_path, sizeof account_path, "/accounts/%s", user);
    snprintf(deposit_path, sizeof deposit_path, "/accounts/%s/deposits", user);
    char body[128];
    snprintf(body, sizeof body, "{\"user_id\":\"%s\"}", user);
    resp r;
    api(&r, "POST", payments_url(), "/accounts", body, NULL);
    cr_assert_eq(r.status, 201);
    resp_free(&r);
    api(&r, "POST", payments_url(), deposit_path, "{\"amount\": 40}", NULL);
    cr_assert_eq(r.status, 201);
    resp_free(&r);

    cr_assert_eq(stack("pg-stop"), 0);

    api(&r, "GET", payments_url(), account_path, NULL, NULL);
    cr_assert_eq(r.status, 503, "%s", r.body);
    cr_assert_str_eq(err_code(&r), "database_unavailable");
    cr_assert_lt(r.seconds, 1.0, "took %.3f s", r.seconds);
    resp_free(&r);
    api(&r, "POST", payments_url(), deposit_path, "{\"amount\": 1000}", NULL);
    cr_assert_eq(r.status, 503, "%s", r.body);
    cr_assert_lt(r.seconds, 1.0, "took %.3f s", r.seconds);
    resp_free(&r);
    api(&r, "GET", payments_url(), "/readyz", NULL, NULL);
    cr_assert_eq(r.status, 503);
    cr_assert_str_eq(
        json_string_value(json_object_get(json_object_get(r.json, "checks"), "database")),
        "unreachable");
    resp_free(&r);
    api(&r, "GET", payments_url(), "/healthz", NULL, NULL);
    cr_assert_eq(r.status, 200, "the process itself is alive");
    resp_free(&r);

    cr_assert_eq(stack("pg-start"), 0);
    cr_assert(wait_until(account_readable, NULL, 15000), "no recovery within 15 s");

    api(&r, "POST", payments_url(), deposit_path, "{\"amount\": 2}", NULL);
    cr_assert_eq(r.status, 201, "%s", r.body);
    cr_assert_eq(json_integer_value(json_object_get(r.json, "balance")), 42,
                 "the deposit refused while down moved no money");
    resp_free(&r);
    api(&r, "GET", payments_url(), "/readyz", NULL, NULL);
    cr_assert_eq(r.status, 200, "%s", r.body);
    resp_free(&r);
}
