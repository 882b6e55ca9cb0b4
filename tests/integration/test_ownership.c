/* Only the owner (README, "Guarantees", 7): every endpoint of orders and
 * payments wants a token; another user's token gets 403 (404 for an order,
 * whose existence is not revealed) and changes nothing, checked in both
 * databases; forged, expired, misdirected and mangled tokens get 401; the
 * cookie only works from the shop's own page; an operator reads but never
 * moves money. */
#include "harness.h"

#include "lib/auth.h"
#include "lib/clock.h"
#include "lib/file.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct endpoint {
    const char *method;
    const char *(*base)(void);
    char path[160];
    char body[160];
} endpoint;

/* Every endpoint that acts for a user, aimed at `owner`'s resources. */
static size_t endpoints(endpoint *e, const char *owner, const char *order_id)
{
    size_t n = 0;
    e[n++] = (endpoint){"POST", payments_url, "/accounts", ""};
    snprintf(e[n - 1].body, sizeof e[0].body, "{\"user_id\":\"%s\"}", owner);
    e[n++] = (endpoint){"GET", payments_url, "", ""};
    snprintf(e[n - 1].path, sizeof e[0].path, "/accounts/%s", owner);
    e[n++] = (endpoint){"POST", payments_url, "", "{\"amount\":5}"};
    snprintf(e[n - 1].path, sizeof e[0].path, "/accounts/%s/deposits", owner);
    e[n++] = (endpoint){"POST", orders_url, "/orders", ""};
    snprintf(e[n - 1].body, sizeof e[0].body, "{\"user_id\":\"%s\",\"amount\":5}", owner);
    e[n++] = (endpoint){"GET", orders_url, "", ""};
    snprintf(e[n - 1].path, sizeof e[0].path, "/orders?user_id=%s", owner);
    e[n++] = (endpoint){"GET", orders_url, "", ""};
    snprintf(e[n - 1].path, sizeof e[0].path, "/orders/%s", order_id);
    e[n++] = (endpoint){"GET", orders_url, "", ""};
    snprintf(e[n - 1].path, sizeof e[0].path, "/ws?user_id=%s", owner);
    return n;
}

typedef struct snapshot {
    int64_t balance, ledger, orders, keys_p, keys_o;
} snapshot;

static snapshot snap(const char *user)
{
    PGconn *p = payments_db(), *o = orders_db();
    snapshot s = {
        .balance = db_int(p, "SELECT coalesce(sum(balance), -1) FROM accounts WHERE user_id = $1",
                          user, NULL),
        .ledger = db_int(p, "SELECT count(*) FROM ledger WHERE user_id = $1", user, NULL),
        .orders = db_int(o, "SELECT count(*) FROM orders WHERE user_id = $1", user, NULL),
        .keys_p = db_int(p, "SELECT count(*) FROM idempotency_keys WHERE key LIKE $1 || ':%'", user,
                         NULL),
        .keys_o = db_int(o, "SELECT count(*) FROM idempotency_keys WHERE key LIKE $1 || ':%'", user,
                         NULL),
    };
    PQfinish(p), PQfinish(o);
    return s;
}

static void assert_unchanged(const snapshot *a, const snapshot *b, const char *what)
{
    cr_assert(a->balance == b->balance && a->ledger == b->ledger && a->orders == b->orders &&
                  a->keys_p == b->keys_p && a->keys_o == b->keys_o,
              "%s changed something: balance %lld->%lld, ledger %lld->%lld, orders %lld->%lld",
              what, (long long)a->balance, (long long)b->balance, (long long)a->ledger,
              (long long)b->ledger, (long long)a->orders, (long long)b->orders);
}

static void owner_with_an_order(char *user, size_t len, char *order_id)
{
    unique_name(user, len, "owner");
    account_with(user, 100);
    cr_assert_eq(place_order(user, 10, order_id), 201);
    cr_assert(all_final(user, 30000));
}

Test(ownership, every_endpoint_wants_a_token)
{
    char owner[64], order_id[37];
    owner_with_an_order(owner, sizeof owner, order_id);
    snapshot before = snap(owner);
    endpoint e[8];
    size_t n = endpoints(e, owner, order_id);
    const char *none[] = {NO_TOKEN, "Idempotency-Key: no-token-1", NULL};
    for (size_t i = 0; i < n; i++) {
        resp r;
        cr_assert_eq(
            api(&r, e[i].method, e[i].base(), e[i].path, e[i].body[0] ? e[i].body : NULL, none), 0);
        cr_assert_eq(r.status, 401, "%s %s: %ld %s", e[i].method, e[i].path, r.status, r.body);
        cr_assert_str_eq(err_code(&r), "unauthenticated");
        char www[32];
        cr_assert_not_null(resp_header(&r, "WWW-Authenticate", www, sizeof www));
        resp_free(&r);
    }
    snapshot after = snap(owner);
    assert_unchanged(&before, &after, "a request without a token");
}

Test(ownership, another_users_token_gets_403_or_404_and_changes_nothing)
{
    char owner[64], order_id[37], intruder[64];
    owner_with_an_order(owner, sizeof owner, order_id);
    unique_name(intruder, sizeof intruder, "intruder");
    account_with(intruder, 50);
    snapshot before = snap(owner), intruder_before = snap(intruder);
    endpoint e[8];
    size_t n = endpoints(e, owner, order_id);
    const long want[] = {403, 403, 403, 403, 403, 404, 403};
    const char *codes[] = {"forbidden", "forbidden",       "forbidden", "forbidden",
                           "forbidden", "order_not_found", "forbidden"};
    /* The owner's own Idempotency-Key, reused by the intruder: it is not his. */
    const char *headers[] = {"Idempotency-Key: shared-key", NULL};
    act_as(intruder);
    for (size_t i = 0; i < n; i++) {
        resp r;
        cr_assert_eq(
            api(&r, e[i].method, e[i].base(), e[i].path, e[i].body[0] ? e[i].body : NULL, headers),
            0);
        cr_assert_eq(r.status, want[i], "%s %s: %ld %s", e[i].method, e[i].path, r.status, r.body);
        cr_assert_str_eq(err_code(&r), codes[i], "%s %s", e[i].method, e[i].path);
        resp_free(&r);
    }
    act_as(NULL);
    snapshot after = snap(owner), intruder_after = snap(intruder);
    assert_unchanged(&before, &after, "another user's token");
    assert_unchanged(&intruder_before, &intruder_after, "the intruder's own state");
}

/* An Idempotency-Key is its user's: the key the owner used, sent by
 * another user with the very same body, is a new request of that user
 * (their own order, their own deposit), never the owner's stored answer. */
Test(ownership, a_key_the_owner_used_is_anothers_own_key)
{
    char owner[64], other[64], key[96], header[128], path[128];
    unique_name(owner, sizeof owner, "keyowner");
    unique_name(other, sizeof other, "keyother");
    unique_name(key, sizeof key, "sharedkey");
    account_with(owner, 100);
    account_with(other, 100);
    snprintf(header, sizeof header, "Idempotency-Key: %s", key);
    const char *headers[] = {header, NULL};
    const char *order = "{\"amount\":10,\"description\":\"same body\"}";
    const char *deposit = "{\"amount\":7}";
    char ids[2][37];
    const char *users[] = {owner, other};
    for (int i = 0; i < 2; i++) {
        act_as(users[i]);
        resp r;
        cr_assert_eq(api(&r, "POST", orders_url(), "/orders", order, headers), 0);
        cr_assert_eq(r.status, 201, "%s: %ld %s", users[i], r.status, r.body);
        cr_assert_str_eq(json_string_value(json_object_get(r.json, "user_id")), users[i],
                         "%s got another user's order", users[i]);
        snprintf(ids[i], sizeof ids[i], "%s", json_string_value(json_object_get(r.json, "id")));
        resp_free(&r);
        snprintf(path, sizeof path, "/accounts/%s/deposits", users[i]);
        cr_assert_eq(api(&r, "POST", payments_url(), path, deposit, headers), 0);
        cr_assert_eq(r.status, 201, "%s: %ld %s", users[i], r.status, r.body);
        cr_assert_str_eq(json_string_value(json_object_get(r.json, "user_id")), users[i]);
        resp_free(&r);
    }
    act_as(NULL);
    cr_assert_str_neq(ids[0], ids[1], "the second user was answered with the first one's order");
    for (int i = 0; i < 2; i++) {
        cr_assert(all_final(users[i], 30000));
        cr_assert_eq(orders_with(users[i], "FINISHED"), 1, "%s", users[i]);
        assert_money_adds_up(users[i]);
    }
    PGconn *p = payments_db();
    for (int i = 0; i < 2; i++)
        cr_assert_eq(db_int(p, "SELECT balance FROM accounts WHERE user_id = $1", users[i], NULL),
                     97, "%s: 100 + 7 - 10", users[i]);
    PQfinish(p);
}

static char *token_with(const auth_key *k, const char *user, int64_t iat, int64_t exp,
                        const char *audience)
{
    auth_claims c = {.role = AUTH_USER, .iat = iat, .exp = exp};
    snprintf(c.sub, sizeof c.sub, "%s", user);
    return auth_sign(k, &c, audience);
}

Test(ownership, forged_expired_misdirected_and_mangled_tokens_get_401)
{
    char owner[64], order_id[37], path[128];
    owner_with_an_order(owner, sizeof owner, order_id);
    snprintf(path, sizeof path, "/accounts/%s", owner);
    auth_key stranger;
    cr_assert_eq(auth_init(), 0);
    auth_key_generate(&stranger);
    int64_t now = clock_wall_s();
    char *good = token_for(owner, false);
    char truncated[2048], flipped[2048];
    snprintf(truncated, sizeof truncated, "%.*s", (int)strlen(good) - 5, good);
    snprintf(flipped, sizeof flipped, "%s", good);
    flipped[strlen(flipped) / 2] ^= 1;
    char *forged = token_with(&stranger, owner, now, now + 900, "shop");
    /* Signed by our key: only the time, or the audience, refuses these. */
    char *expired = token_for_claims(owner, now - 1000, now - 100, "shop");
    char *elsewhere = token_for_claims(owner, now, now + 900, "another-service");
    struct {
        const char *token, *code;
    } bad[] = {
        {forged, "invalid_token"},
        {expired, "token_expired"},
        {elsewhere, "invalid_token"},
        {"eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSJ9.", "invalid_token"},
        {truncated, "invalid_token"},
        {flipped, "invalid_token"},
        {"not a token at all", "invalid_token"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char auth[2200];
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", bad[i].token);
        const char *headers[] = {auth, NULL};
        resp r;
        cr_assert_eq(api(&r, "GET", payments_url(), path, NULL, headers), 0);
        cr_assert_eq(r.status, 401, "token %zu: %ld %s", i, r.status, r.body);
        cr_assert_str_eq(err_code(&r), bad[i].code, "token %zu", i);
        resp_free(&r);
    }
    free(good), free(forged), free(expired), free(elsewhere);
}

Test(ownership, the_cookie_works_only_from_the_shops_own_page)
{
    char owner[64], order_id[37], path[128], cookie[2100];
    owner_with_an_order(owner, sizeof owner, order_id);
    snprintf(path, sizeof path, "/accounts/%s/deposits", owner);
    char *token = token_for(owner, false);
    snprintf(cookie, sizeof cookie, "Cookie: shop_session=%s", token);
    free(token);
    const char *origin = getenv("SHOP_GATEWAY_URL");
    char own[128];
    snprintf(own, sizeof own, "Origin: %s", origin ? origin : "http://127.0.0.1:18000");
    struct {
        const char *h1, *h2;
        long status;
        const char *code;
    } cases[] = {
        {cookie, NULL, 403, "cross_origin"},                          /* no Origin at all */
        {cookie, "Origin: http://evil.example", 403, "cross_origin"}, /* another site */
        {cookie, own, 201, ""},                                       /* the shop's page */
    };
    snapshot before = snap(owner);
    for (size_t i = 0; i < 3; i++) {
        const char *headers[] = {NO_TOKEN, cases[i].h1, cases[i].h2, NULL};
        resp r;
        cr_assert_eq(api(&r, "POST", payments_url(), path, "{\"amount\": 7}", headers), 0);
        cr_assert_eq(r.status, cases[i].status, "case %zu: %s", i, r.body);
        if (cases[i].code[0])
            cr_assert_str_eq(err_code(&r), cases[i].code);
        resp_free(&r);
    }
    snapshot after = snap(owner);
    cr_assert_eq(after.balance, before.balance + 7, "one deposit, from the shop's own page");
    /* A body that is not JSON, whatever carries the identity: 415. */
    act_as(owner);
    const char *text[] = {"Content-Type: text/plain", NULL};
    resp r;
    cr_assert_eq(api(&r, "POST", payments_url(), path, "amount=7", text), 0);
    cr_assert_eq(r.status, 415, "%s", r.body);
    resp_free(&r);
    act_as(NULL);
}

Test(ownership, an_operator_reads_for_support_but_moves_no_money)
{
    char owner[64], order_id[37], path[128];
    owner_with_an_order(owner, sizeof owner, order_id);
    snapshot before = snap(owner);
    act_as_operator("support-desk");
    resp r;
    snprintf(path, sizeof path, "/accounts/%s", owner);
    cr_assert_eq(api(&r, "GET", payments_url(), path, NULL, NULL), 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    resp_free(&r);
    snprintf(path, sizeof path, "/orders/%s", order_id);
    cr_assert_eq(api(&r, "GET", orders_url(), path, NULL, NULL), 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    resp_free(&r);
    snprintf(path, sizeof path, "/orders?user_id=%s", owner);
    cr_assert_eq(api(&r, "GET", orders_url(), path, NULL, NULL), 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    resp_free(&r);
    snprintf(path, sizeof path, "/accounts/%s/deposits", owner);
    cr_assert_eq(api(&r, "POST", payments_url(), path, "{\"amount\": 1}", NULL), 0);
    cr_assert_eq(r.status, 403, "an operator does not move a user's money: %s", r.body);
    resp_free(&r);
    char body[128];
    snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"amount\":1}", owner);
    cr_assert_eq(api(&r, "POST", orders_url(), "/orders", body, NULL), 0);
    cr_assert_eq(r.status, 403, "nor orders for them: %s", r.body);
    resp_free(&r);
    act_as(NULL);
    snapshot after = snap(owner);
    assert_unchanged(&before, &after, "an operator");
    /* Each read of a user's data by an operator is on the record. */
    const char *logs[] = {"payments", "orders"};
    for (size_t i = 0; i < 2; i++) {
        char file[512], line[256];
        snprintf(file, sizeof file, "%s/log/%s.log", getenv("SHOP_VAR"), logs[i]);
        snprintf(line, sizeof line, "operator support-desk reads %s", owner);
        char *text = file_read(file, NULL);
        cr_assert(text && strstr(text, line), "%s: no record of the operator's read", file);
        free(text);
    }
}
