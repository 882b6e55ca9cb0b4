/* The broker asks who is there and lets each service do its own part only
 * (issue 24): a client without a password gets nothing in, and orders'
 * principal can neither write payments' results nor read its requests. The
 * clients are built here from librdkafka's own settings, not with
 * lib/kafka.c, which always names the process's principal. */
#include "harness.h"
#include "lib/file.h"
#include "lib/msg.h"

#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The password file of a principal of the test stack (var/kafka-secrets). */
static void secret_of(const char *who, char *out, size_t len)
{
    const char *var = getenv("SHOP_VAR");
    cr_assert_not_null(var, "SHOP_VAR is not set (scripts/test.sh sets it)");
    char path[512];
    snprintf(path, sizeof path, "%s/kafka-secrets/%s", var, who);
    char *secret = file_read(path, NULL);
    cr_assert_not_null(secret, "no password for %s in %s", who, path);
    snprintf(out, len, "%.*s", (int)strcspn(secret, "\r\n"), secret);
    free(secret);
}

static void set(rd_kafka_conf_t *conf, const char *name, const char *value)
{
    char err[256];
    cr_assert_eq(rd_kafka_conf_set(conf, name, value, err, sizeof err), RD_KAFKA_CONF_OK, "%s: %s",
                 name, err);
}

/* Settings for `who` (NULL: no SASL at all, as anyone on the machine). */
static rd_kafka_conf_t *conf_as(const char *who, const char *password)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", getenv("KAFKA_BROKERS"));
    set(conf, "log_level", "0"); /* the refusals are the point: not noise */
    if (who) {
        char pw[128];
        if (!password)
            secret_of(who, pw, sizeof pw);
        set(conf, "security.protocol", "SASL_PLAINTEXT");
        set(conf, "sasl.mechanisms", "SCRAM-SHA-512");
        set(conf, "sasl.username", who);
        set(conf, "sasl.password", password ? password : pw);
    }
    return conf;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    *(rd_kafka_resp_err_t *)opaque = m->err;
}

/* Produces one message as `who` and returns its delivery's outcome. */
static rd_kafka_resp_err_t produce_as(const char *who, const char *password, const char *topic,
                                      const char *key, const char *payload)
{
    rd_kafka_conf_t *conf = conf_as(who, password);
    set(conf, "message.timeout.ms", "5000");
    rd_kafka_resp_err_t outcome = RD_KAFKA_RESP_ERR__IN_PROGRESS;
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, &outcome);
    char err[256];
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    cr_assert_not_null(p, "%s", err);
    cr_assert_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
                                   RD_KAFKA_V_VALUE((void *)payload, strlen(payload)),
                                   RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                 RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_flush(p, 10000);
    rd_kafka_destroy(p);
    return outcome;
}

/* A payment request for `user` of `amount` for order_id: were it taken,
 * payments would debit it. */
static char *request(const char *user, int64_t amount, const char *order_id)
{
    payment_msg m = {.type = MSG_PAYMENT_REQUESTED, .amount = amount};
    snprintf(m.order_id, sizeof m.order_id, "%s", order_id);
    snprintf(m.user_id, sizeof m.user_id, "%s", user);
    char *payload = msg_encode(&m);
    cr_assert_not_null(payload);
    return payload;
}

typedef struct ledger_wait {
    PGconn *db;
    const char *order_id;
} ledger_wait;

static bool in_ledger(void *arg)
{
    ledger_wait *w = arg;
    return db_int(w->db, "SELECT count(*) FROM ledger WHERE order_id = $1", w->order_id, NULL) > 0;
}

Test(broker, a_client_without_a_password_or_with_a_wrong_one_gets_nothing_in, .timeout = 60)
{
    char user[64], order_id[37];
    unique_name(user, sizeof user, "brokerauth");
    account_with(user, 100);
    insert_order(user, 100, order_id); /* NEW, its request not sent */
    char *payload = request(user, 100, order_id);
    rd_kafka_resp_err_t none = produce_as(NULL, NULL, MSG_TOPIC_REQUESTS, user, payload);
    cr_assert_neq(none, RD_KAFKA_RESP_ERR_NO_ERROR, "a client without SASL wrote a request");
    rd_kafka_resp_err_t wrong =
        produce_as("payments", "not-the-password", MSG_TOPIC_REQUESTS, user, payload);
    cr_assert_neq(wrong, RD_KAFKA_RESP_ERR_NO_ERROR, "a wrong password wrote a request");
    /* Proof that what was refused would have moved money: the same
     * message from orders' own principal is taken, and debits. */
    cr_assert_eq(produce_as("orders", NULL, MSG_TOPIC_REQUESTS, user, payload),
                 RD_KAFKA_RESP_ERR_NO_ERROR);
    ledger_wait w = {payments_db(), order_id};
    PGconn *p = w.db;
    cr_assert(wait_until(in_ledger, &w, 30000), "orders' request was not decided");
    cr_assert_eq(db_int(p, "SELECT balance FROM accounts WHERE user_id = $1", user, NULL), 0);
    PQfinish(p);
    free(payload);
    cr_assert(all_final(user, 30000));
    cr_assert_eq(orders_with(user, "FINISHED"), 1);
    assert_money_adds_up(user);
}

Test(broker, each_service_writes_only_its_own_topic_and_reads_only_its_own, .timeout = 60)
{
    char user[64], order_id[37];
    unique_name(user, sizeof user, "brokeracl");
    random_uuid(order_id);
    char *payload = request(user, 1, order_id);
    cr_assert_eq(produce_as("orders", NULL, MSG_TOPIC_RESULTS, user, payload),
                 RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
                 "orders' principal wrote payment.results");
    cr_assert_eq(produce_as("payments", NULL, MSG_TOPIC_REQUESTS, user, payload),
                 RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
                 "payments' principal wrote payment.requests");
    cr_assert_eq(produce_as("orders", NULL, "shop.test", user, payload),
                 RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, "orders wrote another topic");
    free(payload);

    /* orders reading payments' requests, in payments' group or its own. */
    const char *groups[] = {"payments", "orders"};
    for (int g = 0; g < 2; g++) {
        rd_kafka_conf_t *conf = conf_as("orders", NULL);
        set(conf, "group.id", groups[g]);
        set(conf, "auto.offset.reset", "earliest");
        char err[256];
        rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
        cr_assert_not_null(c, "%s", err);
        rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(t, MSG_TOPIC_REQUESTS, 0)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
        cr_assert_eq(rd_kafka_assign(c, t), RD_KAFKA_RESP_ERR_NO_ERROR);
        rd_kafka_topic_partition_list_destroy(t);
        rd_kafka_resp_err_t seen = RD_KAFKA_RESP_ERR_NO_ERROR;
        for (int i = 0; i < 100 && seen == RD_KAFKA_RESP_ERR_NO_ERROR; i++) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
            if (!m)
                continue;
            cr_assert(m->err != RD_KAFKA_RESP_ERR_NO_ERROR,
                      "orders' principal read a request in group %s", groups[g]);
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                seen = m->err;
            rd_kafka_message_destroy(m);
        }
        cr_assert(seen == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ||
                      seen == RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED,
                  "group %s: %s", groups[g], rd_kafka_err2str(seen));
        rd_kafka_consumer_close(c);
        rd_kafka_destroy(c);
    }
}
