/* GET /orders/{id} and GET /accounts/{user_id} through the read group
 * (svc_read): reads that arrive together are fetched with one statement,
 * and each still gets its own answer: its own row, a 404 for a row that is
 * missing or another user's, an operator's look at anyone's. The group is
 * made on purpose: the test locks the table so that the reader waits on
 * one read while the others queue up behind it, then lets go. */
#include "harness.h"

#include <criterion/criterion.h>
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAITING "group_waiting{group=\"reads\"}"
#define WRITING "group_writing{group=\"reads\"}"
#define COMMITS "group_commits_total{group=\"reads\"}"
#define REQUESTS "group_requests_total{group=\"reads\"}"
#define GATHERS "group_gathers_total{group=\"reads\"}"
#define READERS "group_writers{group=\"reads\"}"

typedef struct read_call {
    const char *base;
    char path[128];
    char auth[1024]; /* "Authorization: Bearer ..." */
    pthread_t thread;
    resp r;
} read_call;

static void *get(void *arg)
{
    read_call *c = arg;
    const char *headers[] = {c->auth, NULL};
    api(&c->r, "GET", c->base, c->path, NULL, headers);
    return NULL;
}

static void send_read(read_call *c, const char *base, const char *as, bool operator,
                      const char * path)
{
    c->base = base;
    snprintf(c->path, sizeof c->path, "%s", path);
    char *token = token_for(as, operator);
    snprintf(c->auth, sizeof c->auth, "Authorization: Bearer %s", token);
    free(token);
    pthread_create(&c->thread, NULL, get, c);
}

typedef struct gauge_wait {
    const char *base;
    int64_t writing, waiting;
} gauge_wait;

static bool gauges_are(void *arg)
{
    gauge_wait *w = arg;
    return metric(w->base, WRITING) == w->writing && metric(w->base, WAITING) == w->waiting;
}

/* Locks `table` against reads (ACCESS EXCLUSIVE) until unlock(). */
static PGconn *lock_table(PGconn *db, const char *table)
{
    char sql[128];
    snprintf(sql, sizeof sql, "LOCK TABLE %s IN ACCESS EXCLUSIVE MODE", table);
    PQclear(PQexec(db, "BEGIN"));
    PGresult *r = PQexec(db, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(db));
    PQclear(r);
    return db;
}

static void unlock(PGconn *db)
{
    PQclear(PQexec(db, "COMMIT"));
    PQfinish(db);
}

/* Runs calls[0] alone into the locked table (the reader takes it and waits
 * on the lock), queues calls[1..n) behind it, then lets go: the reader
 * answers the first, then fetches the rest with ONE statement. */
static void read_as_one_group(const char *base, PGconn *locked, read_call *calls, int n,
                              void (*send)(read_call *, int))
{
    cr_assert_eq(metric(base, READERS), 1, "the test stack runs one reader an instance");
    int64_t commits = metric(base, COMMITS), requests = metric(base, REQUESTS);
    send(&calls[0], 0);
    gauge_wait first = {base, 1, 0};
    cr_assert(wait_until(gauges_are, &first, 10000), "the reader never took the first read");
    for (int i = 1; i < n; i++)
        send(&calls[i], i);
    gauge_wait queued = {base, 1, n - 1};
    cr_assert(wait_until(gauges_are, &queued, 10000), "the reads never queued up");
    unlock(locked);
    for (int i = 0; i < n; i++)
        pthread_join(calls[i].thread, NULL);
    cr_assert_eq(metric(base, COMMITS) - commits, 2,
                 "one statement for the first, one for the rest");
    cr_assert_eq(metric(base, REQUESTS) - requests, n);
}

/* The reads of the orders test: who reads which order. */
static char owner[64], other[64], support[64];
static char mine[2][40], theirs[40], upper[40];
static const struct {
    const char *as, *order;
    bool operator;
    long status;
} order_reads[] = {
    {owner, mine[0], false, 200}, /* the first, alone */
    {owner, mine[0], false, 200}, /* the same order twice in one group */
    {owner, mine[1], false, 200}, /* another of one's own */
    {owner, theirs, false, 404},  /* another user's: not there for them */
    {other, theirs, false, 200},  /* ... but there for its owner */
    {owner, upper, false, 200},   /* the id in capitals: the same order */
    {owner, "00000000-0000-4000-8000-000000000000", false, 404}, /* none */
    {support, theirs, true, 200},                                /* an operator sees anyone's */
};
enum { NREADS = sizeof order_reads / sizeof *order_reads };

static void send_order_read(read_call *c, int i)
{
    char path[96];
    snprintf(path, sizeof path, "/orders/%s", order_reads[i].order);
    send_read(c, orders_url(), order_reads[i].as, order_reads[i].operator, path);
}

Test(reads, orders_read_together_share_a_statement_and_each_gets_its_own, .timeout = 60)
{
    unique_name(owner, sizeof owner, "reader");
    unique_name(other, sizeof other, "reader-other");
    unique_name(support, sizeof support, "reader-op");
    account_with(owner, 1000);
    account_with(other, 1000);
    cr_assert_eq(place_order(owner, 10, mine[0]), 201);
    cr_assert_eq(place_order(owner, 20, mine[1]), 201);
    cr_assert_eq(place_order(other, 30, theirs), 201);
    for (size_t i = 0; i <= strlen(mine[1]); i++)
        upper[i] = (char)toupper((unsigned char)mine[1][i]);
    cr_assert(all_final(owner, 60000) && all_final(other, 60000));

    read_call calls[NREADS];
    read_as_one_group(orders_url(), lock_table(orders_db(), "orders"), calls, NREADS,
                      send_order_read);
    for (int i = 0; i < NREADS; i++) {
        resp *r = &calls[i].r;
        cr_assert_eq(r->status, order_reads[i].status, "read %d: %ld %s", i, r->status, r->body);
        if (r->status == 200) {
            /* Its own row: the id asked for (in lower case), its owner. */
            char want[40];
            for (size_t k = 0; k <= strlen(order_reads[i].order); k++)
                want[k] = (char)tolower((unsigned char)order_reads[i].order[k]);
            cr_assert_str_eq(json_string_value(json_object_get(r->json, "id")), want, "read %d", i);
            const char *whose = strcmp(want, theirs) == 0 ? other : owner;
            cr_assert_str_eq(json_string_value(json_object_get(r->json, "user_id")), whose);
            cr_assert_str_eq(json_string_value(json_object_get(r->json, "status")), "FINISHED");
        } else {
            cr_assert_str_eq(err_code(r), "order_not_found", "read %d", i);
        }
        resp_free(r);
    }
}

/* The accounts test: who reads whose account. */
static char rich[64], poor[64], none[64];
static const struct {
    const char *as, *of;
    bool operator;
    long status;
    int64_t balance;
} account_reads[] = {
    {rich, rich, false, 200, 5000}, /* the first, alone */
    {rich, rich, false, 200, 5000}, /* the same account twice in one group */
    {poor, poor, false, 200, 7},    {none, none, false, 404, 0}, /* a user without an account */
    {support, poor, true, 200, 7},                               /* an operator sees anyone's */
};
enum { NACCOUNTS = sizeof account_reads / sizeof *account_reads };

static void send_account_read(read_call *c, int i)
{
    char path[96];
    snprintf(path, sizeof path, "/accounts/%s", account_reads[i].of);
    send_read(c, payments_url(), account_reads[i].as, account_reads[i].operator, path);
}

Test(reads, accounts_read_together_share_a_statement_and_each_gets_its_own, .timeout = 60)
{
    unique_name(rich, sizeof rich, "rich");
    unique_name(poor, sizeof poor, "poor");
    unique_name(none, sizeof none, "none");
    unique_name(support, sizeof support, "reader-op");
    account_with(rich, 5000);
    account_with(poor, 7);

    read_call calls[NACCOUNTS];
    read_as_one_group(payments_url(), lock_table(payments_db(), "accounts"), calls, NACCOUNTS,
                      send_account_read);
    for (int i = 0; i < NACCOUNTS; i++) {
        resp *r = &calls[i].r;
        cr_assert_eq(r->status, account_reads[i].status, "read %d: %ld %s", i, r->status, r->body);
        if (r->status == 200) {
            cr_assert_str_eq(json_string_value(json_object_get(r->json, "user_id")),
                             account_reads[i].of);
            cr_assert_eq(json_integer_value(json_object_get(r->json, "balance")),
                         account_reads[i].balance, "read %d", i);
        } else {
            cr_assert_str_eq(err_code(r), "account_not_found", "read %d", i);
        }
        resp_free(r);
    }
}

/* A reader waits for company (READ_GATHER_US) only after a statement that
 * had some: reads one at a time each go at once, alone. */
Test(reads, a_lone_read_goes_at_once, .timeout = 60)
{
    char user[64], id[40], path[96];
    unique_name(user, sizeof user, "lone-reader");
    account_with(user, 100);
    cr_assert_eq(place_order(user, 1, id), 201);
    snprintf(path, sizeof path, "/orders/%s", id);
    act_as(user);
    /* The reader may be left busy by an earlier test: it waits once. */
    int64_t commits = metric(orders_url(), COMMITS), gathers = metric(orders_url(), GATHERS);
    for (int i = 0; i < 12; i++) {
        resp r;
        api(&r, "GET", orders_url(), path, NULL, NULL);
        cr_assert_eq(r.status, 200, "%s", r.body);
        resp_free(&r);
    }
    act_as(NULL);
    cr_assert_eq(metric(orders_url(), COMMITS) - commits, 12, "one statement per lone read");
    cr_assert_leq(metric(orders_url(), GATHERS) - gathers, 1, "lone reads waited for company");
}
