/* A produce/consume round trip through Apache Kafka over TCP, with the
 * shared Kafka wrappers: idempotent producer, manual commits. */
#include "harness.h"
#include "lib/kafka.h"

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
