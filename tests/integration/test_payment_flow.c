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
    pthread_t th[THREADS];
    burst b[THREADS];
    for (int i = 0; i < THREADS; i++) {
        b[i] = (burst){.user = user, .orders = EACH, .amount = 1};
        pthread_create(&th[i], NULL, place_orders, &b[i]);
    }
    int accepted = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        accepted += atomic_load(&b[i].accepted);
    }
    cr_assert_eq(accepted, THREADS * EACH);
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
