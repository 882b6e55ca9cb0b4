/* POST /orders through the group commit: requests that arrive together
 * share one transaction, and each still gets its own answer, its own
 * order, its Idempotency-Key's meaning, and its own failure. The groups are
 * made on purpose: the test holds a lock the orders' insert needs, so that
 * the requests queue up behind the writers, then lets go. */
#include "harness.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAITING "group_waiting{group=\"orders\"}"
#define COMMITS "group_commits_total{group=\"orders\"}"
#define REQUESTS "group_requests_total{group=\"orders\"}"
#define WRITING "group_writing{group=\"orders\"}"
#define WRITERS "group_writers{group=\"orders\"}"
#define GATHERS "group_gathers_total{group=\"orders\"}"

/* The orders instance under test: the first (one writer, the default)
 * unless a test chooses the second, which the test stack runs with two
 * (ORDERS_WRITERS_<port> in scripts/test.sh). */
static char target[128];

static const char *url(void)
{
    return target[0] ? target : orders_url();
}

static void use_second_instance(void)
{
    const char *second = strchr(orders_urls(), ' ');
    cr_assert_not_null(second, "the test stack runs two orders instances");
    snprintf(target, sizeof target, "%s", second + 1);
    cr_assert_eq(metric(url(), WRITERS), 2, "the second orders instance runs two writers");
}

typedef struct call {
    char body[256];
    char key[128]; /* an Idempotency-Key header, or "" */
    pthread_t thread;
    resp r;
    atomic_bool answered;
} call;

static void *post(void *arg)
{
    call *c = arg;
    const char *headers[] = {c->key[0] ? c->key : NULL, NULL};
    api(&c->r, "POST", url(), "/orders", c->body, headers);
    atomic_store(&c->answered, true);
    return NULL;
}

static void send_call(call *c, const char *user, int64_t amount, const char *description,
                      const char *key)
{
    snprintf(c->body, sizeof c->body, "{\"user_id\":\"%s\",\"amount\":%lld,\"description\":\"%s\"}",
             user, (long long)amount, description);
    c->key[0] = '\0';
    atomic_store(&c->answered, false);
    if (key)
        snprintf(c->key, sizeof c->key, "Idempotency-Key: %s", key);
    pthread_create(&c->thread, NULL, post, c);
}

typedef struct queue_wait {
    int64_t at_least;
} queue_wait;

static bool queued(void *arg)
{
    return metric(url(), WAITING) >= ((queue_wait *)arg)->at_least;
}

/* Holds what every order insert needs (the outbox) until release(). */
static PGconn *hold_inserts(void)
{
    PGconn *db = orders_db();
    PQclear(PQexec(db, "BEGIN"));
    PGresult *r = PQexec(db, "LOCK TABLE outbox IN SHARE ROW EXCLUSIVE MODE");
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(db));
    PQclear(r);
    return db;
}

static void release(PGconn *db)
{
    PQclear(PQexec(db, "COMMIT"));
    PQfinish(db);
}

/* Every writer busy with one order, blocked on the lock: what comes next
 * waits in the queue, and goes as one group. One at a time, or a writer
 * could take two blockers as a group of two. Told by the group's own
 * gauges, not by the database's list of lock waits: after a database
 * restart (db_restart) the services reopen connections as they use them,
 * and a connection's PREPARE of the insert waits for the same lock. */
enum { MAX_WRITERS = 8 };

typedef struct writing_wait {
    int64_t writing;
} writing_wait;

static bool writers_took(void *arg)
{
    return metric(url(), WRITING) == ((writing_wait *)arg)->writing && metric(url(), WAITING) == 0;
}

/* Returns how many blockers it sent: one per writer. */
static int occupy_writers(call *blockers, const char *user)
{
    int writers = (int)metric(url(), WRITERS);
    cr_assert(writers >= 1 && writers <= MAX_WRITERS, "%d writers", writers);
    for (int i = 0; i < writers; i++) {
        send_call(&blockers[i], user, 1, "blocker", NULL);
        writing_wait w = {i + 1};
        cr_assert(wait_until(writers_took, &w, 5000), "writer %d never took its order", i + 1);
    }
    return writers;
}

static void join_blockers(call *blockers, int n)
{
    for (int i = 0; i < n; i++) {
        pthread_join(blockers[i].thread, NULL);
        cr_assert_eq(blockers[i].r.status, 201, "%s", blockers[i].r.body);
        resp_free(&blockers[i].r);
    }
}

static void share_commits(void)
{
    enum { N = 40 };
    char user[64];
    unique_name(user, sizeof user, "group");
    account_with(user, 100000);
    int64_t commits = metric(url(), COMMITS), requests = metric(url(), REQUESTS);
    PGconn *lock = hold_inserts();
    call blockers[MAX_WRITERS], calls[N];
    int nb = occupy_writers(blockers, user);
    for (int i = 0; i < N; i++)
        send_call(&calls[i], user, 10 + i, "grouped", NULL);
    queue_wait w = {N};
    cr_assert(wait_until(queued, &w, 20000), "the requests never queued up");
    release(lock);

    char seen[N][37];
    for (int i = 0; i < N; i++) {
        pthread_join(calls[i].thread, NULL);
        cr_assert_eq(calls[i].r.status, 201, "%s", calls[i].r.body);
        /* Its own order: its amount, an id of its own. */
        cr_assert_eq(json_integer_value(json_object_get(calls[i].r.json, "amount")), 10 + i);
        snprintf(seen[i], sizeof seen[i], "%s",
                 json_string_value(json_object_get(calls[i].r.json, "id")));
        for (int j = 0; j < i; j++)
            cr_assert_str_neq(seen[i], seen[j]);
        resp_free(&calls[i].r);
    }
    join_blockers(blockers, nb);
    /* The 40 went in one group (the writers take everything waiting). */
    cr_assert_eq(metric(url(), REQUESTS) - requests, N + nb, "%lld requests",
                 (long long)(metric(url(), REQUESTS) - requests));
    cr_assert_leq(metric(url(), COMMITS) - commits, 2 * nb, "%lld transactions for %d orders",
                  (long long)(metric(url(), COMMITS) - commits), N + nb);
    cr_assert(all_final(user, 60000));
    cr_assert_eq(orders_with(user, "FINISHED"), N + nb);
    assert_money_adds_up(user);
}

static void drop_refusal(void)
{
    PGconn *db = orders_db();
    PQclear(PQexec(db, "ALTER TABLE orders DROP CONSTRAINT IF EXISTS test_refused"));
    PQfinish(db);
}

Test(group_commit, an_order_the_database_refuses_fails_alone, .timeout = 60, .fini = drop_refusal)
{
    enum { N = 12, BAD = 5 };
    char user[64];
    unique_name(user, sizeof user, "refused");
    account_with(user, 100000);
    PGconn *db = orders_db();
    PGresult *r = PQexec(db, "ALTER TABLE orders ADD CONSTRAINT test_refused"
                             " CHECK (description <> 'refuse me') NOT VALID");
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(db));
    PQclear(r);
    PQfinish(db);

    PGconn *lock = hold_inserts();
    call blockers[MAX_WRITERS], calls[N];
    int nb = occupy_writers(blockers, user);
    for (int i = 0; i < N; i++)
        send_call(&calls[i], user, 10, i == BAD ? "refuse me" : "fine", NULL);
    queue_wait w = {N};
    cr_assert(wait_until(queued, &w, 20000), "the requests never queued up");
    release(lock);
    for (int i = 0; i < N; i++) {
        pthread_join(calls[i].thread, NULL);
        if (i == BAD) {
            cr_assert_eq(calls[i].r.status, 500, "%s", calls[i].r.body);
            cr_assert_str_eq(err_code(&calls[i].r), "internal");
        } else {
            cr_assert_eq(calls[i].r.status, 201, "%s", calls[i].r.body);
        }
        resp_free(&calls[i].r);
    }
    join_blockers(blockers, nb);
    cr_assert(all_final(user, 60000));
    cr_assert_eq(orders_with(user, "FINISHED"), N - 1 + nb, "the refused one alone is missing");
    PGconn *o = orders_db();
    cr_assert_eq(db_int(o,
                        "SELECT count(*) FROM orders WHERE user_id = $1 AND description ="
                        " 'refuse me'",
                        user, NULL),
                 0);
    PQfinish(o);
    assert_money_adds_up(user);
}

static void drop_commit_refusal(void)
{
    PGconn *db = orders_db();
    test_trigger_drop(db, "test_refused_at_commit", "orders");
    PQfinish(db);
}

/* 201 means committed. A group whose COMMIT itself fails (a deferred
 * constraint, checked only then: the inserts went through) must answer
 * nobody 201 on the strength of its inserts; each request goes again alone,
 * and only the one at fault fails, its order absent. With keys on every
 * request, so that the group has a COMMIT of its own to fail. */
Test(group_commit, a_group_whose_commit_fails_answers_201_only_for_what_committed, .timeout = 60,
     .fini = drop_commit_refusal)
{
    enum { N = 8, BAD = 3 };
    char user[64], keys[N][64];
    unique_name(user, sizeof user, "commitfails");
    account_with(user, 100000);
    PGconn *db = orders_db();
    test_trigger(db, "test_refused_at_commit", "orders",
                 "IF NEW.description = 'refused at commit' THEN RAISE EXCEPTION 'refused at"
                 " commit by the test' USING ERRCODE = 'check_violation'; END IF;",
                 true);
    PQfinish(db);

    PGconn *lock = hold_inserts();
    call blockers[MAX_WRITERS], calls[N];
    int nb = occupy_writers(blockers, user);
    for (int i = 0; i < N; i++) {
        unique_name(keys[i], sizeof keys[i], "commitkey");
        send_call(&calls[i], user, 10, i == BAD ? "refused at commit" : "fine", keys[i]);
    }
    queue_wait w = {N};
    cr_assert(wait_until(queued, &w, 20000), "the requests never queued up");
    release(lock);
    for (int i = 0; i < N; i++) {
        pthread_join(calls[i].thread, NULL);
        if (i == BAD)
            cr_assert_neq(calls[i].r.status, 201, "answered 201, never committed: %s",
                          calls[i].r.body);
        else
            cr_assert_eq(calls[i].r.status, 201, "%s", calls[i].r.body);
        resp_free(&calls[i].r);
    }
    join_blockers(blockers, nb);
    PGconn *o = orders_db();
    cr_assert_eq(db_int(o,
                        "SELECT count(*) FROM orders WHERE user_id = $1 AND description ="
                        " 'refused at commit'",
                        user, NULL),
                 0);
    PQfinish(o);
    cr_assert(all_final(user, 60000));
    cr_assert_eq(orders_with(user, "FINISHED"), N - 1 + nb, "every order answered 201 exists");
    assert_money_adds_up(user);
}

typedef struct answers_wait {
    call *calls;
    int n;
} answers_wait;

static bool all_answered(void *arg)
{
    answers_wait *w = arg;
    for (int i = 0; i < w->n; i++)
        if (!atomic_load(&w->calls[i].answered))
            return false;
    return true;
}

#define EXPIRED "group_expired_total{group=\"orders\"}"

/* The table the orders go into held for longer than the deadline
 * (ORDERS_CREATE_DEADLINE_MS, 4 s in the test stack) while orders are
 * posted: those in a writer's transaction (blocked on the lock) and those
 * queued behind them are all answered 503 not_created by the deadline,
 * while the lock is still held; none of them is ever inserted, after the
 * lock goes either; a retry with the same key then places each once. */
Test(group_commit, orders_past_the_deadline_are_answered_not_created_and_never_made, .timeout = 90)
{
    enum { N = 6 };
    const char *setting = getenv("ORDERS_CREATE_DEADLINE_MS");
    double deadline_s = (setting ? atoi(setting) : 10000) / 1000.0;
    char user[64], keys[N][64];
    unique_name(user, sizeof user, "deadline");
    account_with(user, 100000);
    PGconn *lock = hold_inserts();
    call all[MAX_WRITERS + N];
    int nb = occupy_writers(all, user); /* in a transaction, blocked */
    for (int i = 0; i < N; i++) {
        unique_name(keys[i], sizeof keys[i], "deadlinekey");
        send_call(&all[nb + i], user, 10, "late", keys[i]);
    }
    queue_wait q = {N};
    cr_assert(wait_until(queued, &q, 20000), "the requests never queued up");
    answers_wait w = {all, nb + N};
    cr_assert(wait_until(all_answered, &w, (int)(deadline_s * 1000) + 5000),
              "requests still unanswered past the deadline, the lock still held");
    for (int i = 0; i < nb + N; i++) {
        pthread_join(all[i].thread, NULL);
        cr_assert_eq(all[i].r.status, 503, "%s", all[i].r.body);
        cr_assert_str_eq(err_code(&all[i].r), "not_created", "%s", all[i].r.body);
        char retry[16];
        cr_assert_not_null(resp_header(&all[i].r, "Retry-After", retry, sizeof retry));
        cr_assert_lt(all[i].r.seconds, deadline_s + 1.5, "answered after %.2f s", all[i].r.seconds);
        resp_free(&all[i].r);
    }
    release(lock);
    /* Nothing of them is written later: once the writers are idle again. */
    writing_wait idle = {0};
    cr_assert(wait_until(writers_took, &idle, 10000));
    cr_assert_eq(orders_with(user, "NEW") + orders_with(user, "FINISHED") +
                     orders_with(user, "CANCELLED"),
                 0, "an order its client was told was not created exists");

    for (int i = 0; i < N; i++)
        send_call(&all[i], user, 10, "late", keys[i]);
    for (int i = 0; i < N; i++) {
        pthread_join(all[i].thread, NULL);
        cr_assert_eq(all[i].r.status, 201, "the retry: %s", all[i].r.body);
        resp_free(&all[i].r);
    }
    cr_assert(all_final(user, 60000));
    cr_assert_eq(orders_with(user, "FINISHED"), N, "one order a key");
    assert_money_adds_up(user);
}

static void drop_slow_commit(void)
{
    PGconn *db = orders_db();
    test_trigger_drop(db, "test_slow_commit", "orders");
    PQfinish(db);
}

/* Writers stuck where nothing may cancel them: in a COMMIT that takes
 * longer than the deadline (a deferred trigger sleeps in it). The orders
 * queued behind them are still answered 503 not_created by their deadline
 * (the group's reaper takes them out of the queue), are never inserted,
 * and the slow COMMITs, once done, are answered 201: late, but true. */
Test(group_commit, orders_queued_behind_a_stuck_commit_are_answered_not_created_by_the_deadline,
     .timeout = 90, .fini = drop_slow_commit)
{
    enum { N = 4 };
    const char *setting = getenv("ORDERS_CREATE_DEADLINE_MS");
    int deadline_ms = setting ? atoi(setting) : 10000;
    char user[64], body[128];
    unique_name(user, sizeof user, "stuck");
    account_with(user, 100000);
    snprintf(body, sizeof body,
             "IF NEW.description = 'slow commit' THEN PERFORM pg_sleep(%.1f); END IF;",
             deadline_ms / 1000.0 + 2);
    PGconn *db = orders_db();
    test_trigger(db, "test_slow_commit", "orders", body, true);
    PQfinish(db);
    int64_t expired = metric(url(), EXPIRED);
    /* Every writer in a slow COMMIT (keyed: a COMMIT of their own). */
    int writers = (int)metric(url(), WRITERS);
    cr_assert(writers >= 1 && writers <= MAX_WRITERS);
    call slow[MAX_WRITERS], late[N];
    for (int i = 0; i < writers; i++) {
        char key[64];
        unique_name(key, sizeof key, "slowkey");
        send_call(&slow[i], user, 10, "slow commit", key);
        writing_wait w = {i + 1};
        cr_assert(wait_until(writers_took, &w, 5000), "writer %d never took its order", i + 1);
    }
    for (int i = 0; i < N; i++) {
        char key[64];
        unique_name(key, sizeof key, "queuedkey");
        send_call(&late[i], user, 10, "queued", key);
    }
    queue_wait q = {N};
    cr_assert(wait_until(queued, &q, 20000), "the requests never queued up");
    answers_wait w = {late, N};
    cr_assert(wait_until(all_answered, &w, deadline_ms + 3000),
              "orders queued behind stuck writers unanswered past the deadline");
    for (int i = 0; i < N; i++) {
        pthread_join(late[i].thread, NULL);
        cr_assert_eq(late[i].r.status, 503, "%s", late[i].r.body);
        cr_assert_str_eq(err_code(&late[i].r), "not_created");
        cr_assert_lt(late[i].r.seconds, deadline_ms / 1000.0 + 1.5);
        resp_free(&late[i].r);
    }
    cr_assert_geq(metric(url(), EXPIRED) - expired, N, "taken out of the queue, unrun");
    for (int i = 0; i < writers; i++) {
        pthread_join(slow[i].thread, NULL);
        cr_assert_eq(slow[i].r.status, 201, "a COMMIT that finished: %s", slow[i].r.body);
        resp_free(&slow[i].r);
    }
    PGconn *o = orders_db();
    cr_assert_eq(db_int(o,
                        "SELECT count(*) FROM orders WHERE user_id = $1 AND description ="
                        " 'queued'",
                        user, NULL),
                 0, "an order answered not_created exists");
    PQfinish(o);
    cr_assert(all_final(user, 60000));
    cr_assert_eq(orders_with(user, "FINISHED"), writers);
    assert_money_adds_up(user);
}

static void drop_commit_kill(void)
{
    PGconn *db = orders_db();
    test_trigger_drop(db, "test_dies_at_commit", "orders");
    PQfinish(db);
}

/* The connection lost during the COMMIT (its backend ends itself there,
 * from a deferred trigger): whether the order was made is unknown to the
 * service, and it says so: 503 outcome_unknown with Retry-After, never
 * "not created". A retry with the same key then gives exactly one order. */
Test(group_commit, a_commit_that_loses_its_connection_is_answered_outcome_unknown, .timeout = 60,
     .fini = drop_commit_kill)
{
    char user[64], key[64];
    unique_name(user, sizeof user, "indoubt");
    unique_name(key, sizeof key, "indoubtkey");
    account_with(user, 1000);
    PGconn *db = orders_db();
    test_trigger(db, "test_dies_at_commit", "orders",
                 "IF NEW.description = 'dies at commit' THEN"
                 " PERFORM pg_terminate_backend(pg_backend_pid()); END IF;",
                 true);
    PQfinish(db);
    call c;
    send_call(&c, user, 25, "dies at commit", key);
    pthread_join(c.thread, NULL);
    cr_assert_eq(c.r.status, 503, "%s", c.r.body);
    cr_assert_str_eq(err_code(&c.r), "outcome_unknown", "%s", c.r.body);
    char retry[16];
    cr_assert_not_null(resp_header(&c.r, "Retry-After", retry, sizeof retry));
    resp_free(&c.r);

    drop_commit_kill();
    for (int i = 0; i < 2; i++) { /* the retry, and the retry's retry */
        send_call(&c, user, 25, "dies at commit", key);
        pthread_join(c.thread, NULL);
        cr_assert_eq(c.r.status, 201, "%s", c.r.body);
        resp_free(&c.r);
    }
    cr_assert(all_final(user, 30000));
    cr_assert_eq(orders_with(user, "FINISHED"), 1, "exactly one order for the key");
    assert_money_adds_up(user);
}

Test(group_commit, one_idempotency_key_twice_in_a_group_is_one_order, .timeout = 60)
{
    char user[64], key[64], other[64];
    unique_name(user, sizeof user, "groupkey");
    unique_name(key, sizeof key, "key");
    unique_name(other, sizeof other, "key");
    account_with(user, 1000);
    PGconn *lock = hold_inserts();
    call blockers[MAX_WRITERS], calls[5];
    int nb = occupy_writers(blockers, user);
    send_call(&calls[0], user, 30, "once", key);
    send_call(&calls[1], user, 30, "once", key);    /* a retry: the same answer */
    send_call(&calls[2], user, 99, "another", key); /* another request: 422 */
    send_call(&calls[3], user, 40, "own key", other);
    send_call(&calls[4], user, 40, "own key", other);
    queue_wait w = {5};
    cr_assert(wait_until(queued, &w, 20000), "the requests never queued up");
    release(lock);
    for (int i = 0; i < 5; i++)
        pthread_join(calls[i].thread, NULL);
    join_blockers(blockers, nb);
    /* Whichever request with the key came first did the work: the same
     * request again replays its answer, another one gets 422. */
    bool pair_first = calls[0].r.status == 201;
    if (pair_first) {
        cr_assert_eq(calls[1].r.status, 201, "%s", calls[1].r.body);
        cr_assert_str_eq(json_string_value(json_object_get(calls[0].r.json, "id")),
                         json_string_value(json_object_get(calls[1].r.json, "id")));
        cr_assert_eq(calls[2].r.status, 422, "%s", calls[2].r.body);
        cr_assert_str_eq(err_code(&calls[2].r), "idempotency_key_reused");
    } else {
        cr_assert_eq(calls[2].r.status, 201, "%s", calls[2].r.body);
        for (int i = 0; i < 2; i++) {
            cr_assert_eq(calls[i].r.status, 422, "%s", calls[i].r.body);
            cr_assert_str_eq(err_code(&calls[i].r), "idempotency_key_reused");
        }
    }
    cr_assert_eq(calls[3].r.status, 201);
    cr_assert_eq(calls[4].r.status, 201);
    cr_assert_str_eq(json_string_value(json_object_get(calls[3].r.json, "id")),
                     json_string_value(json_object_get(calls[4].r.json, "id")));
    for (int i = 0; i < 5; i++)
        resp_free(&calls[i].r);
    cr_assert(all_final(user, 60000));
    /* The blockers, and one order per key. */
    cr_assert_eq(orders_with(user, "FINISHED"), nb + 2);
    assert_money_adds_up(user);
}

static void post_alone(const char *user)
{
    call c;
    send_call(&c, user, 1, "alone", NULL);
    pthread_join(c.thread, NULL);
    cr_assert_eq(c.r.status, 201, "%s", c.r.body);
    resp_free(&c.r);
}

/* A writer waits for company (ORDERS_GATHER_US) only after a group that
 * had some: orders placed one at a time each commit alone, with no wait;
 * after a group of many, the writer that carried it waits once. */
static void wait_for_company(void)
{
    char user[64];
    unique_name(user, sizeof user, "gather");
    account_with(user, 100000);
    /* A writer left busy by an earlier test waits once, alone, and is not
     * busy after: one wait per writer at most. */
    int64_t commits = metric(url(), COMMITS), gathers = metric(url(), GATHERS);
    for (int i = 0; i < 12; i++)
        post_alone(user);
    cr_assert_eq(metric(url(), COMMITS) - commits, 12, "one commit per lone order");
    cr_assert_leq(metric(url(), GATHERS) - gathers, metric(url(), WRITERS),
                  "lone orders waited for company");

    /* A group of 20 (made as above), then lone orders: the writer that
     * carried the group waits for company before its next one. Which
     * writer takes a lone order, when there are several, is the
     * scheduler's choice, so a few. */
    enum { N = 20 };
    PGconn *lock = hold_inserts();
    call blockers[MAX_WRITERS], calls[N];
    int nb = occupy_writers(blockers, user);
    for (int i = 0; i < N; i++)
        send_call(&calls[i], user, 1, "grouped", NULL);
    queue_wait w = {N};
    cr_assert(wait_until(queued, &w, 20000), "the requests never queued up");
    release(lock);
    for (int i = 0; i < N; i++) {
        pthread_join(calls[i].thread, NULL);
        cr_assert_eq(calls[i].r.status, 201, "%s", calls[i].r.body);
        resp_free(&calls[i].r);
    }
    join_blockers(blockers, nb);
    gathers = metric(url(), GATHERS);
    for (int i = 0; i < 20 && metric(url(), GATHERS) == gathers; i++)
        post_alone(user);
    cr_assert_eq(metric(url(), GATHERS) - gathers, 1, "the busy writer never waited");
    cr_assert(all_final(user, 60000));
    assert_money_adds_up(user);
}

Test(group_commit, concurrent_orders_share_commits_and_each_gets_its_own, .timeout = 60)
{
    share_commits();
}

Test(group_commit, a_writer_waits_for_company_only_under_load, .timeout = 60)
{
    wait_for_company();
}

/* Two writers compete for the queue: one may gather while the other takes
 * every order meanwhile. A writer that lost its gather so once ended, and
 * the instance went on with one. After a concurrent burst (many such
 * races), every writer still takes a blocker of its own. */
Test(group_commit, two_writers_both_keep_writing_after_racing_for_the_queue, .timeout = 120)
{
    use_second_instance();
    enum { CLIENTS = 8, EACH = 25 };
    char user[64];
    unique_name(user, sizeof user, "race");
    account_with(user, 100000);
    call calls[CLIENTS];
    int64_t gathers = metric(url(), GATHERS);
    for (int round = 0; round < EACH; round++) {
        for (int i = 0; i < CLIENTS; i++)
            send_call(&calls[i], user, 1, "race", NULL);
        for (int i = 0; i < CLIENTS; i++) {
            pthread_join(calls[i].thread, NULL);
            cr_assert_eq(calls[i].r.status, 201, "%s", calls[i].r.body);
            resp_free(&calls[i].r);
        }
    }
    cr_assert_gt(metric(url(), GATHERS) - gathers, 0, "no writer gathered during the race");
    share_commits();
    wait_for_company();
    cr_assert(all_final(user, 60000));
    cr_assert_eq(orders_with(user, "FINISHED"), CLIENTS * EACH);
    assert_money_adds_up(user);
}
