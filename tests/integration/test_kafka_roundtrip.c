/* A produce/consume round trip through Apache Kafka over TCP, with the
 * shared Kafka wrappers: idempotent producer, manual commits; and an outbox
 * relay whose producer fails for good and is replaced. */
#include "harness.h"
#include "lib/clock.h"
#include "lib/db.h"
#include "lib/kafka.h"
#include "lib/outbox.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *brokers(void)
{
    const char *b = getenv("KAFKA_BROKERS");
    cr_assert_not_null(b, "KAFKA_BROKERS is not set (scripts/test.sh sets it)");
    return b;
}

typedef struct delivery {
    int ok, failed;
} delivery;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    delivery *d = opaque;
    if (m->err)
        d->failed++;
    else
        d->ok++;
}

Test(kafka, produce_consume_and_commit_through_kafka, .timeout = 60)
{
    enum { N = 100 };
    const char *topic = "shop.test";
    char run[64], group[80];
    unique_name(run, sizeof run, "run");
    snprintf(group, sizeof group, "group-%s", run);

    delivery d = {0};
    rd_kafka_t *p = kafka_producer_new(brokers(), "test-producer", on_delivery, &d);
    cr_assert_not_null(p);
    for (int i = 0; i < N; i++) {
        char key[96], value[128];
        snprintf(key, sizeof key, "%s", run);
        snprintf(value, sizeof value, "{\"run\":\"%s\",\"seq\":%d}", run, i);
        cr_assert_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
                                       RD_KAFKA_V_VALUE(value, strlen(value)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    cr_assert_eq(rd_kafka_flush(p, 20000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_poll(p, 0);
    cr_assert_eq(d.ok, N, "delivered %d, failed %d", d.ok, d.failed);
    kafka_destroy(p);

    const char *topics[] = {topic, NULL};
    rd_kafka_t *c = kafka_consumer_new(brokers(), group, "test-consumer", topics, NULL);
    cr_assert_not_null(c);
    bool seen[N] = {0};
    int distinct = 0;
    while (distinct < N) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 30000);
        cr_assert_not_null(m, "no message within 30 s; got %d of %d", distinct, N);
        if (m->err) {
            rd_kafka_message_destroy(m);
            continue;
        }
        char value[256];
        snprintf(value, sizeof value, "%.*s", (int)m->len, (const char *)m->payload);
        json_t *j = json_loads(value, 0, NULL);
        if (j && strcmp(json_string_value(json_object_get(j, "run")), run) == 0) {
            int seq = (int)json_integer_value(json_object_get(j, "seq"));
            cr_assert(seq >= 0 && seq < N);
            if (!seen[seq]) {
                seen[seq] = true;
                distinct++;
            }
        }
        json_decref(j);
        rd_kafka_topic_partition_list_t *at = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(at, topic, m->partition)->offset = m->offset + 1;
        cr_assert_eq(rd_kafka_commit(c, at, 0), RD_KAFKA_RESP_ERR_NO_ERROR);
        rd_kafka_topic_partition_list_destroy(at);
        rd_kafka_message_destroy(m);
    }

    /* The group's committed offsets now cover every message of this run. */
    rd_kafka_topic_partition_list_t *assigned = NULL;
    cr_assert_eq(rd_kafka_assignment(c, &assigned), RD_KAFKA_RESP_ERR_NO_ERROR);
    cr_assert_eq(rd_kafka_committed(c, assigned, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    int64_t committed = 0;
    for (int i = 0; i < assigned->cnt; i++)
        if (assigned->elems[i].offset > 0)
            committed += assigned->elems[i].offset;
    cr_assert_geq(committed, N, "committed offsets sum to %lld", (long long)committed);
    rd_kafka_topic_partition_list_destroy(assigned);
    kafka_destroy(c);
}

typedef struct outbox_wait {
    PGconn *db;
} outbox_wait;

static bool outbox_empty(void *arg)
{
    outbox_wait *w = arg;
    return db_int(w->db, "SELECT count(*) FROM relaytest.outbox", NULL, NULL) == 0;
}

/* The relay's series, as /metrics shows them. Caller frees. */
static char *relay_metrics(outbox_relay *r)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    outbox_relay_metrics(r, out);
    fclose(out);
    return text;
}

static void sql(PGconn *db, const char *statement)
{
    PGresult *r = PQexec(db, statement);
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s: %s", statement, PQresultErrorMessage(r));
    PQclear(r);
}

/* A relay of our own over an outbox table of our own (schema relaytest of
 * the orders database, so the services' relays do not take its rows). */
Test(kafka, a_relay_whose_producer_failed_for_good_replaces_it_and_delivers, .timeout = 90)
{
    char run[64], group[80], url[512];
    unique_name(run, sizeof run, "fatal");
    snprintf(group, sizeof group, "group-%s", run);
    PGconn *db = orders_db();
    sql(db, "DROP SCHEMA IF EXISTS relaytest CASCADE");
    sql(db, "CREATE SCHEMA relaytest");
    sql(db, "CREATE TABLE relaytest.outbox (LIKE public.outbox INCLUDING ALL)");
    snprintf(url, sizeof url, "%s?options=-csearch_path%%3Drelaytest",
             getenv("ORDERS_DATABASE_URL") ? getenv("ORDERS_DATABASE_URL")
                                           : "postgresql://shop@127.0.0.1:54330/orders");
    static const db_stmt *const sets[] = {outbox_stmts, NULL};
    db_pool *pool = db_pool_new(url, 2, sets);
    cr_assert_not_null(pool);
    outbox_relay_config cfg = {
        .brokers = brokers(), .client_id = "test-relay", .batch = 16, .poll_ms = 100};
    outbox_relay *relay = outbox_relay_start(pool, &cfg);
    cr_assert_not_null(relay);

    /* The producer fails for good, then a row arrives: it must still go. */
    outbox_relay_fail_producer(relay);
    db_conn *c = NULL;
    cr_assert_eq(db_acquire(pool, 1000, &c), 0);
    cr_assert_eq(db_begin(c), 0);
    cr_assert_eq(outbox_add(c, "shop.test", run, run, NULL), 0);
    cr_assert_eq(db_commit(c), 0);
    db_release(pool, c);
    outbox_relay_wake(relay);
    outbox_wait w = {.db = db};
    cr_assert(wait_until(outbox_empty, &w, 30000), "the row was not delivered");
    char *m = relay_metrics(relay);
    cr_assert(strstr(m, "\noutbox_producer_renewals_total 1\n"), "no renewal in:\n%s", m);
    cr_assert(strstr(m, "\noutbox_published_total 1\n"), "%s", m);
    free(m);
    outbox_relay_stop(relay);
    db_pool_free(pool);
    sql(db, "DROP SCHEMA relaytest CASCADE");
    PQfinish(db);

    /* And it is on the topic. */
    const char *topics[] = {"shop.test", NULL};
    rd_kafka_t *consumer = kafka_consumer_new(brokers(), group, "test-consumer", topics, NULL);
    cr_assert_not_null(consumer);
    bool found = false;
    for (int64_t until = clock_now_ms() + 30000; !found && clock_now_ms() < until;) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(consumer, 500);
        if (msg && !msg->err && msg->len == strlen(run) && memcmp(msg->payload, run, msg->len) == 0)
            found = true;
        if (msg)
            rd_kafka_message_destroy(msg);
    }
    kafka_destroy(consumer);
    cr_assert(found, "the message is not on shop.test");
}
