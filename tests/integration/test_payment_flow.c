/* The exactly-once payment flow under concurrency, redelivery and poison
 * messages, against the real database and Apache Kafka. */
#include "harness.h"
#include "lib/kafka.h"
#include "lib/msg.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

Test(flow, two_hundred_concurrent_orders_never_overdraw, .timeout = 120)
{
    char user[64];
    unique_name(user, sizeof user, "crowd");
    account_with(user, 150);
    enum { THREADS = 20, EACH = 10 };
    cr_assert_eq(place_orders_at_once(user, THREADS, EACH, 1), THREADS * EACH);
    cr_assert(all_final(user, 90000), "orders still NEW");
    cr_assert_eq(orders_with(user, "FINISHED"), 150);
    cr_assert_eq(orders_with(user, "CANCELLED"), 50);
    PGconn *p = payments_db();
    cr_assert_eq(db_int(p, "SELECT balance FROM accounts WHERE user_id = $1", user, NULL), 0);
    PQfinish(p);
    assert_money_adds_up(user);
}

static rd_kafka_t *producer(void)
{
    const char *brokers = getenv("KAFKA_BROKERS");
    cr_assert_not_null(brokers);
    rd_kafka_t *p = kafka_producer_new(brokers, "test-injector", NULL, NULL);
    cr_assert_not_null(p);
    return p;
}

static void produce(rd_kafka_t *p, const char *topic, int32_t partition, const char *key,
                    const void *value, size_t len)
{
    cr_assert_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                                   RD_KAFKA_V_KEY(key, strlen(key)),
                                   RD_KAFKA_V_VALUE((void *)value, len),
                                   RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                 RD_KAFKA_RESP_ERR_NO_ERROR);
}

typedef struct replay_wait {
    int64_t target;
} replay_wait;

static bool replays_reached(void *arg)
{
    replay_wait *w = arg;
    return metric_sum(payments_urls(), "payments_total{outcome=\"replayed\"}") >= w->target;
}

Test(flow, redelivered_request_debits_once, .timeout = 90)
{
    char user[64], id[37];
    unique_name(user, sizeof user, "dup");
    account_with(user, 100);
    cr_assert_eq(place_order(user, 40, id), 201);
    cr_assert(all_final(user, 30000));
    cr_assert_eq(orders_with(user, "FINISHED"), 1);

    /* The same payment.requested, 25 more times, straight onto the topic. */
    replay_wait w = {.target =
                         metric_sum(payments_urls(), "payments_total{outcome=\"replayed\"}") + 25};
    inject_request(id, user, 40, 25);
    cr_assert(wait_until(replays_reached, &w, 30000), "the duplicates were not all handled");

    PGconn *db = payments_db();
    cr_assert_eq(db_int(db, "SELECT count(*) FROM ledger WHERE order_id = $1", id, NULL), 1);
    cr_assert_eq(db_int(db, "SELECT balance FROM accounts WHERE user_id = $1", user, NULL), 60);
    cr_assert_eq(db_int(db, "SELECT count(*) FROM inbox WHERE order_id = $1", id, NULL), 1);
    PQfinish(db);
    cr_assert_eq(orders_with(user, "FINISHED"), 1, "replayed results change nothing");
    assert_money_adds_up(user);
}

/* Waits for `want` dead letters of `payload` whose reason is LIKE `reason`. */
typedef struct dead_wait {
    PGconn *db;
    const char *payload, *reason;
    int64_t want;
} dead_wait;

static int64_t dead_letters_of(const dead_wait *w)
{
    return db_int(w->db,
                  "SELECT count(*) FROM dead_letters WHERE payload = convert_to($1, 'UTF8')"
                  " AND reason LIKE $2",
                  w->payload, w->reason);
}

static bool dead_lettered(void *arg)
{
    dead_wait *w = arg;
    return dead_letters_of(w) >= w->want;
}

Test(flow, poison_messages_are_set_aside_and_block_nothing, .timeout = 90)
{
    char run[64], user[64], poison_req[160], poison_res[160], id[37];
    unique_name(run, sizeof run, "poison");
    unique_name(user, sizeof user, "afterpoison");
    snprintf(poison_req, sizeof poison_req, "not json at all %s", run);
    snprintf(poison_res, sizeof poison_res,
             "{\"type\":\"payment.completed\",\"version\":99,\"run\":\"%s\"}", run);
    /* On every partition, so whatever comes next sits behind poison. */
    const int partitions = kafka_partitions();
    rd_kafka_t *p = producer();
    for (int32_t part = 0; part < partitions; part++) {
        produce(p, MSG_TOPIC_REQUESTS, part, run, poison_req, strlen(poison_req));
        produce(p, MSG_TOPIC_RESULTS, part, run, poison_res, strlen(poison_res));
    }
    cr_assert_eq(rd_kafka_flush(p, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    kafka_destroy(p);

    account_with(user, 10);
    cr_assert_eq(place_order(user, 10, id), 201);
    cr_assert(all_final(user, 30000), "an order behind poison messages stayed NEW");
    cr_assert_eq(orders_with(user, "FINISHED"), 1);

    dead_wait pw = {.db = payments_db(), .payload = poison_req, .reason = "_%", .want = partitions};
    cr_assert(wait_until(dead_lettered, &pw, 20000), "payments did not dead-letter the poison");
    dead_wait ow = {.db = orders_db(), .payload = poison_res, .reason = "_%", .want = partitions};
    cr_assert(wait_until(dead_lettered, &ow, 20000), "orders did not dead-letter the poison");
    ow.reason = "%version 99%";
    cr_assert_eq(dead_letters_of(&ow), partitions);
    PQfinish(pw.db);
    PQfinish(ow.db);
    /* The partitions, and so the dead letters, are spread over the
     * instances. */
    cr_assert_geq(metric_sum(payments_urls(), "dead_letters_total{topic=\"payment.requests\"}"),
                  partitions);
    cr_assert_geq(metric_sum(orders_urls(), "dead_letters_total{topic=\"payment.results\"}"),
                  partitions);
}

Test(flow, a_message_that_fails_alone_is_isolated_and_never_debits_twice, .timeout = 90)
{
    char user[64], id[37];
    unique_name(user, sizeof user, "purged");
    account_with(user, 100);
    cr_assert_eq(place_order(user, 25, id), 201);
    cr_assert(all_final(user, 30000));

    /* As if the inbox had forgotten the order (past its retention): the
     * ledger's unique order id is then what refuses a second debit, and
     * the message that fails by itself is set aside, not retried for ever. */
    PGconn *db = payments_db();
    PGresult *r = PQexecParams(db, "DELETE FROM inbox WHERE order_id = $1", 1, NULL,
                               (const char *[]){id}, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    payment_msg m = {.type = MSG_PAYMENT_REQUESTED, .amount = 25};
    snprintf(m.order_id, sizeof m.order_id, "%s", id);
    snprintf(m.user_id, sizeof m.user_id, "%s", user);
    char *payload = msg_encode(&m);
    inject_request(id, user, 25, 1);

    dead_wait w = {.db = db, .payload = payload, .reason = "%SQLSTATE 23505%", .want = 1};
    cr_assert(wait_until(dead_lettered, &w, 30000),
              "the duplicate was not dead-lettered with its SQLSTATE");
    cr_assert_eq(dead_letters_of(&w), 1, "set aside once");
    cr_assert_eq(db_int(db, "SELECT count(*) FROM ledger WHERE order_id = $1", id, NULL), 1);
    cr_assert_eq(db_int(db, "SELECT balance FROM accounts WHERE user_id = $1", user, NULL), 75);
    free(payload);
    PQfinish(db);

    /* The partition moved on: the next order of this user is paid. */
    cr_assert_eq(place_order(user, 5, NULL), 201);
    cr_assert(all_final(user, 30000));
    cr_assert_eq(orders_with(user, "FINISHED"), 2);
    assert_money_adds_up(user);
}

typedef struct lock_wait {
    PGconn *db;
    int64_t want;
} lock_wait;

/* Other sessions of the payments database waiting for a lock. */
static bool waiting_for_locks(void *arg)
{
    lock_wait *w = arg;
    return db_int(w->db,
                  "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                  " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
                  NULL, NULL) >= w->want;
}

typedef struct deposit_call {
    const char *user;
    int64_t amount;
    long status;
} deposit_call;

static void *deposit_thread(void *arg)
{
    deposit_call *d = arg;
    char path[128], body[64];
    snprintf(path, sizeof path, "/accounts/%s/deposits", d->user);
    snprintf(body, sizeof body, "{\"amount\":%lld}", (long long)d->amount);
    resp r;
    api(&r, "POST", payments_url(), path, body, NULL);
    d->status = r.status;
    resp_free(&r);
    return NULL;
}

#define ISOLATED "consumer_isolated_batches_total{topic=\"payment.requests\"}"

/* The race the key rules out in normal operation, made to happen: one
 * user's requests on every partition, so both payments instances decide
 * debits of the same account at the same moment, and a deposit races them.
 * The test holds the account's row lock until each instance has a batch
 * waiting for it (and the deposit too), then lets go. The account holds one
 * order's worth and the deposit less than another: each batch alone would
 * pay one order on the balance it read, so a batch that decided on a
 * balance another was changing (no FOR UPDATE in payment_batch) pays a
 * second one, and only the CHECK stops it. Each batch must decide on the
 * balance as the one before it left it: exactly one order paid, none
 * failing on the CHECK and redone message by message, never below zero,
 * the books exact. */
Test(flow, debits_of_one_account_decided_on_two_instances_at_once_never_overdraw, .timeout = 120)
{
    enum { N = 40, AMOUNT = 10, START = 10, DEPOSIT = 5 };
    char user[64], ids[N][37];
    unique_name(user, sizeof user, "race");
    account_with(user, START);
    for (int i = 0; i < N; i++)
        insert_order(user, AMOUNT, ids[i]);
    int64_t isolated = metric_sum(payments_urls(), ISOLATED);

    PGconn *holder = payments_db();
    db_ok(holder, "BEGIN", NULL);
    db_ok(holder, "SELECT 1 FROM accounts WHERE user_id = $1 FOR UPDATE", user);
    inject_requests_spread((const char(*)[37])ids, N, user, AMOUNT);
    lock_wait w = {.db = payments_db(), .want = 2};
    cr_assert(wait_until(waiting_for_locks, &w, 30000),
              "the two payments instances never both waited for the account");
    deposit_call d = {.user = user, .amount = DEPOSIT};
    pthread_t th;
    pthread_create(&th, NULL, deposit_thread, &d);
    w.want = 3;
    cr_assert(wait_until(waiting_for_locks, &w, 30000), "the deposit never waited for the account");
    db_ok(holder, "COMMIT", NULL);
    pthread_join(th, NULL);
    cr_assert_eq(d.status, 201, "the deposit that raced the debits");

    cr_assert(all_final(user, 60000), "requests left undecided");
    int64_t paid = orders_with(user, "FINISHED"),
            balance = db_int(w.db, "SELECT balance FROM accounts WHERE user_id = $1", user, NULL);
    /* The first batch pays one on 10; the deposit brings 5, never enough
     * for another. */
    cr_assert_eq(paid, 1, "%lld paid", (long long)paid);
    cr_assert_eq(balance, START + DEPOSIT - paid * AMOUNT);
    cr_assert_eq(orders_with(user, "CANCELLED"), N - paid);
    cr_assert_eq(metric_sum(payments_urls(), ISOLATED), isolated,
                 "a batch decided on a balance another had changed, failed on the CHECK and was "
                 "redone message by message");
    PQfinish(w.db);
    PQfinish(holder);
    assert_money_adds_up(user);
}

static void drop_ledger_refusal(void)
{
    PGconn *db = payments_db();
    test_trigger_drop(db, "test_refuse_ledger", "ledger");
    PQfinish(db);
}

/* The inbox row, the debit, the ledger row and the result go together or
 * not at all: the database refuses the ledger row of one order (a trigger
 * made for the test, as a constraint would), so its request fails after
 * its inbox row was written and its account debited. Nothing of it may
 * stay: no inbox row (a later delivery would be answered with an outcome
 * never paid for), no debit, no result; the request is set aside whole,
 * and once the refusal is gone, a new delivery is paid exactly once. */
Test(flow, a_request_that_fails_after_its_inbox_row_keeps_nothing, .timeout = 90,
     .fini = drop_ledger_refusal)
{
    char user[64], id[37];
    unique_name(user, sizeof user, "halfdone");
    account_with(user, 100);
    insert_order(user, 30, id);
    PGconn *db = payments_db();
    char body[160];
    snprintf(body, sizeof body,
             "IF NEW.order_id = '%s' THEN RAISE EXCEPTION 'refused by the test'"
             " USING ERRCODE = 'check_violation'; END IF;",
             id);
    test_trigger(db, "test_refuse_ledger", "ledger", body, false);
    payment_msg m = {.type = MSG_PAYMENT_REQUESTED, .amount = 30};
    snprintf(m.order_id, sizeof m.order_id, "%s", id);
    snprintf(m.user_id, sizeof m.user_id, "%s", user);
    char *payload = msg_encode(&m);
    inject_request(id, user, 30, 1);

    dead_wait dw = {.db = db, .payload = payload, .reason = "%SQLSTATE 23514%", .want = 1};
    cr_assert(wait_until(dead_lettered, &dw, 30000), "the refused request was not set aside");
    cr_assert_eq(db_int(db, "SELECT count(*) FROM inbox WHERE order_id = $1", id, NULL), 0,
                 "the inbox row outlived its transaction");
    cr_assert_eq(db_int(db, "SELECT count(*) FROM ledger WHERE order_id = $1", id, NULL), 0);
    cr_assert_eq(db_int(db, "SELECT count(*) FROM outbox WHERE key = $1", id, NULL), 0);
    cr_assert_eq(db_int(db, "SELECT balance FROM accounts WHERE user_id = $1", user, NULL), 100);
    cr_assert_eq(orders_with(user, "NEW"), 1);

    drop_ledger_refusal();
    inject_request(id, user, 30, 1);
    cr_assert(all_final(user, 30000), "the request delivered again was not decided");
    cr_assert_eq(orders_with(user, "FINISHED"), 1);
    cr_assert_eq(db_int(db, "SELECT count(*) FROM ledger WHERE order_id = $1", id, NULL), 1);
    cr_assert_eq(db_int(db, "SELECT balance FROM accounts WHERE user_id = $1", user, NULL), 70);
    free(payload);
    PQfinish(db);
    assert_money_adds_up(user);
}

typedef struct ignored_wait {
    int64_t target;
} ignored_wait;

static bool ignored_reached(void *arg)
{
    return metric_sum(orders_urls(), "orders_results_ignored_total") >=
           ((ignored_wait *)arg)->target;
}

/* A result that contradicts an order's final status (a stale or replayed
 * one) changes nothing: only a NEW order moves. */
Test(flow, a_result_for_an_order_already_final_changes_nothing, .timeout = 90)
{
    char user[64], paid[37], refused[37];
    unique_name(user, sizeof user, "final");
    account_with(user, 10);
    cr_assert_eq(place_order(user, 10, paid), 201);
    cr_assert(all_final(user, 30000));
    cr_assert_eq(place_order(user, 10, refused), 201);
    cr_assert(all_final(user, 30000));
    cr_assert_eq(orders_with(user, "FINISHED"), 1);
    cr_assert_eq(orders_with(user, "CANCELLED"), 1);

    ignored_wait w = {metric_sum(orders_urls(), "orders_results_ignored_total") + 2};
    payment_msg failed = {.type = MSG_PAYMENT_FAILED, .amount = 10},
                completed = {.type = MSG_PAYMENT_COMPLETED, .amount = 10};
    snprintf(failed.order_id, sizeof failed.order_id, "%s", paid);
    snprintf(failed.user_id, sizeof failed.user_id, "%s", user);
    snprintf(failed.reason, sizeof failed.reason, "insufficient_funds");
    snprintf(completed.order_id, sizeof completed.order_id, "%s", refused);
    snprintf(completed.user_id, sizeof completed.user_id, "%s", user);
    char *a = msg_encode(&failed), *b = msg_encode(&completed);
    inject_raw(MSG_TOPIC_RESULTS, paid, a);
    inject_raw(MSG_TOPIC_RESULTS, refused, b);
    free(a), free(b);
    cr_assert(wait_until(ignored_reached, &w, 30000), "the contrary results were not handled");
    PGconn *db = orders_db();
    cr_assert_eq(
        db_int(db, "SELECT count(*) FROM orders WHERE id = $1 AND status = 'FINISHED'", paid, NULL),
        1, "a paid order moved");
    cr_assert_eq(db_int(db, "SELECT count(*) FROM orders WHERE id = $1 AND status = 'CANCELLED'",
                        refused, NULL),
                 1, "a refused order moved");
    PQfinish(db);
    assert_money_adds_up(user);
}

/* A result is applied only to the order it was asked for: one that names
 * another amount, or another user, is set aside with its reason and
 * changes nothing (issue 24: anything on the broker could otherwise mark
 * an order paid for free). The real payment after it is applied. */
Test(flow, a_result_naming_another_amount_or_user_is_dead_lettered_and_changes_nothing,
     .timeout = 90)
{
    char user[64], id[37];
    unique_name(user, sizeof user, "forgedresult");
    account_with(user, 100);
    insert_order(user, 30, id); /* NEW, its request not sent */
    int64_t mismatched = metric_sum(orders_urls(), "orders_results_mismatched_total");
    payment_msg cheap = {.type = MSG_PAYMENT_COMPLETED, .amount = 1},
                other = {.type = MSG_PAYMENT_COMPLETED, .amount = 30};
    snprintf(cheap.order_id, sizeof cheap.order_id, "%s", id);
    snprintf(cheap.user_id, sizeof cheap.user_id, "%s", user);
    snprintf(other.order_id, sizeof other.order_id, "%s", id);
    snprintf(other.user_id, sizeof other.user_id, "someone-else");
    char *a = msg_encode(&cheap), *b = msg_encode(&other);
    inject_raw(MSG_TOPIC_RESULTS, id, a);
    inject_raw(MSG_TOPIC_RESULTS, id, b);
    PGconn *db = orders_db();
    char why[64];
    snprintf(why, sizeof why, "%%order %s names%%", id);
    dead_wait w = {db, a, why, 1}, w2 = {db, b, why, 1};
    cr_assert(wait_until(dead_lettered, &w, 30000) && wait_until(dead_lettered, &w2, 30000),
              "the forged results were not set aside");
    cr_assert_eq(
        db_int(db, "SELECT count(*) FROM orders WHERE id = $1 AND status = 'NEW'", id, NULL), 1,
        "a forged result moved the order");
    cr_assert_eq(db_int(db,
                        "SELECT count(*) FROM dead_letters WHERE reason LIKE '%' || $1 || '%'"
                        " AND reason LIKE '%amount 1;%'",
                        id, NULL),
                 1);
    cr_assert_eq(metric_sum(orders_urls(), "orders_results_mismatched_total"), mismatched + 2);
    /* The real payment is applied. */
    inject_request(id, user, 30, 1);
    cr_assert(all_final(user, 30000));
    cr_assert_eq(
        db_int(db, "SELECT count(*) FROM orders WHERE id = $1 AND status = 'FINISHED'", id, NULL),
        1);
    PQfinish(db);
    free(a), free(b);
    assert_money_adds_up(user);
}

#define RENAMED "payment_batch_renamed_by_test"

static void restore_decision_function(void)
{
    PGconn *db = payments_db();
    PQclear(PQexec(db, "DO $$ BEGIN IF to_regprocedure('" RENAMED "(uuid[],text[],bigint[])')"
                       " IS NOT NULL THEN ALTER FUNCTION " RENAMED "(uuid[],text[],bigint[])"
                       " RENAME TO payment_batch; END IF; END $$"));
    PQfinish(db);
}

typedef struct systemic_wait {
    int64_t target;
} systemic_wait;

static bool systemic_reached(void *arg)
{
    return metric_sum(payments_urls(),
                      "consumer_systemic_failures_total{topic=\"payment.requests\"}") >=
           ((systemic_wait *)arg)->target;
}

/* A rolling upgrade renames the function payments decides with (42883 for
 * every message, 42 being a class no message's data can cause) while
 * orders keep coming: payments waits it out, counted, and sets nothing
 * aside; once the name is back every order is paid, once (issue 24: each
 * message used to be dead-lettered, and its order left NEW although paid
 * for by nobody). */
Test(flow, a_decision_function_renamed_under_load_is_waited_out_and_sets_nothing_aside,
     .timeout = 120, .fini = restore_decision_function)
{
    char user[64];
    unique_name(user, sizeof user, "renamed");
    account_with(user, 1000);
    PGconn *p = payments_db(), *o = orders_db();
    const char *dl = "SELECT count(*) FROM dead_letters";
    int64_t dead_p = db_int(p, dl, NULL, NULL), dead_o = db_int(o, dl, NULL, NULL);
    systemic_wait w = {metric_sum(payments_urls(),
                                  "consumer_systemic_failures_total{topic=\"payment.requests\"}") +
                       3};
    db_ok(p, "ALTER FUNCTION payment_batch(uuid[], text[], bigint[]) RENAME TO " RENAMED, NULL);

    enum { THREADS = 4, EACH = 10 };
    cr_assert_eq(place_orders_at_once(user, THREADS, EACH, 10), THREADS * EACH);
    cr_assert(wait_until(systemic_reached, &w, 30000), "payments never met the renamed function");
    cr_assert_eq(orders_with(user, "FINISHED"), 0, "paid while the function was missing");
    cr_assert_eq(db_int(p, dl, NULL, NULL), dead_p, "payments set messages aside");

    restore_decision_function();
    cr_assert(all_final(user, 60000), "orders still NEW after the function came back");
    cr_assert_eq(orders_with(user, "FINISHED"), THREADS * EACH);
    cr_assert_eq(db_int(p, "SELECT count(*) FROM ledger WHERE kind = 'debit' AND from_account = $1",
                        user, NULL),
                 THREADS * EACH, "each order debited once");
    cr_assert_eq(db_int(p, "SELECT balance FROM accounts WHERE user_id = $1", user, NULL),
                 1000 - THREADS * EACH * 10);
    cr_assert_eq(db_int(p, dl, NULL, NULL), dead_p, "payments set messages aside");
    cr_assert_eq(db_int(o, dl, NULL, NULL), dead_o, "orders set messages aside");
    PQfinish(p), PQfinish(o);
    assert_money_adds_up(user);
}
