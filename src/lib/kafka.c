#include "lib/kafka.h"
#include "lib/config.h"
#include "lib/file.h"
#include "lib/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cfg_setting kafka_settings_list[] = {
    CFG_S("KAFKA_BROKERS", kafka_settings, brokers, "127.0.0.1:9092",
          "bootstrap servers (the stack passes every node's)"),
    CFG_S("KAFKA_SASL_USERNAME", kafka_settings, sasl_username, "",
          "the service's principal on the broker (SASL/SCRAM-SHA-512); unset: no SASL, which "
          "the stack's broker refuses"),
    CFG_S("KAFKA_SASL_PASSWORD_FILE", kafka_settings, sasl_password_file, "",
          "the file holding that principal's password (the stack: var/kafka-secrets/NAME)"),
    CFG_I("KAFKA_FETCH_WAIT_MS", kafka_settings, fetch_wait_ms, 0, 60000, 100,
          "consumers' fetch.wait.max.ms: how long Kafka may hold an empty fetch (it answers as "
          "soon as data arrives)"),
    CFG_I("KAFKA_MESSAGE_TIMEOUT_MS", kafka_settings, message_timeout_ms, 1000, 900000, 30000,
          "a produced message fails after this long (its outbox row stays and goes again)"),
    CFG_I("KAFKA_MAX_POLL_INTERVAL_MS", kafka_settings, max_poll_interval_ms, 6000, 86400000,
          300000,
          "librdkafka's max.poll.interval.ms; consumers keep polling while they wait out an "
          "outage, so they are not put out of their group"),
};
const cfg_table kafka_settings_table = CFG_TABLE("kafka", kafka_settings_list);

static kafka_settings settings;
static int settings_rc;
static pthread_once_t settings_once = PTHREAD_ONCE_INIT;

static void load_settings(void)
{
    settings_rc = cfg_load(&kafka_settings_table, &settings);
}

int kafka_settings_load(void)
{
    pthread_once(&settings_once, load_settings);
    return settings_rc;
}

const kafka_settings *kafka_config(void)
{
    kafka_settings_load();
    return &settings;
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    /* librdkafka says "error" (3) of every lost connection, and retries
     * them all by itself: a warning here; 0-2 are its real emergencies. */
    log_msg(level <= 2   ? LOG_ERROR
            : level <= 5 ? LOG_WARN
                         : LOG_DEBUG,
            NULL, "kafka %s: %s", fac, buf);
}

static bool set(rd_kafka_conf_t *conf, const char *name, const char *value)
{
    char err[256];
    if (rd_kafka_conf_set(conf, name, value, err, sizeof err) == RD_KAFKA_CONF_OK)
        return true;
    /* A secret's value is never logged. */
    log_msg(LOG_ERROR, NULL, "kafka setting %s=%s: %s", name,
            strstr(name, "password") ? "(hidden)" : value, err);
    return false;
}

/* Who this client is to the broker: SASL/SCRAM-SHA-512 as
 * KAFKA_SASL_USERNAME, with the password read from the file
 * KAFKA_SASL_PASSWORD_FILE (never from the environment or a command line,
 * where other processes may read it). No user set: no SASL, which a broker
 * of ours refuses. False when the password cannot be read. */
static bool set_principal(rd_kafka_conf_t *conf)
{
    const char *user = kafka_config()->sasl_username, *file = kafka_config()->sasl_password_file;
    if (!*user)
        return true;
    char *password = *file ? file_read(file, NULL) : NULL;
    if (!password) {
        log_msg(LOG_ERROR, NULL, "KAFKA_SASL_PASSWORD_FILE (%s): %s", *file ? file : "unset",
                *file ? strerror(errno) : "set it with KAFKA_SASL_USERNAME");
        return false;
    }
    password[strcspn(password, "\r\n")] = '\0';
    bool ok = set(conf, "security.protocol", "SASL_PLAINTEXT") &&
              set(conf, "sasl.mechanisms", "SCRAM-SHA-512") && set(conf, "sasl.username", user) &&
              set(conf, "sasl.password", password);
    explicit_bzero(password, strlen(password));
    free(password);
    return ok;
}

static rd_kafka_conf_t *base_conf(const char *brokers, const char *client_id)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, on_log);
    if (set(conf, "bootstrap.servers", brokers) && set(conf, "client.id", client_id) &&
        /* A lost broker is retried soon, and at least every second: a
         * restarted node is back in seconds. */
        set(conf, "reconnect.backoff.ms", "50") && set(conf, "reconnect.backoff.max.ms", "1000") &&
        /* Small messages must not wait for Nagle and delayed ACKs (~40 ms). */
        set(conf, "socket.nagle.disable", "true") &&
        /* A topic that appears (created after a broker lost its data) or
         * grows is seen within 10 s, not librdkafka's default 5 minutes: a
         * consumer that joined while its topic was missing has no
         * partitions until it looks again. */
        set(conf, "topic.metadata.refresh.interval.ms", "10000") && set_principal(conf))
        return conf;
    rd_kafka_conf_destroy(conf);
    return NULL;
}

int kafka_message_timeout_ms(void)
{
    return (int)kafka_config()->message_timeout_ms;
}

rd_kafka_t *kafka_producer_new(const char *brokers, const char *client_id,
                               void (*dr_cb)(rd_kafka_t *, const rd_kafka_message_t *, void *),
                               void *opaque)
{
    rd_kafka_conf_t *conf = base_conf(brokers, client_id);
    if (!conf)
        return NULL;
    char timeout[16];
    snprintf(timeout, sizeof timeout, "%d", kafka_message_timeout_ms());
    /* Idempotence: retries neither duplicate nor reorder a partition's
     * messages; it implies acks=all, said again here for the reader. */
    if (!set(conf, "enable.idempotence", "true") || !set(conf, "acks", "all") ||
        !set(conf, "linger.ms", "1") || !set(conf, "message.timeout.ms", timeout)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    if (dr_cb)
        rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_opaque(conf, opaque);
    char err[256];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk)
        log_msg(LOG_ERROR, NULL, "kafka producer: %s", err); /* conf freed by rd_kafka_new */
    return rk;
}

rd_kafka_t *kafka_consumer_new(const char *brokers, const char *group, const char *client_id,
                               const char *const *topics, const kafka_consumer_hooks *hooks)
{
    char fetch_wait_ms[24], max_poll_ms[24];
    snprintf(fetch_wait_ms, sizeof fetch_wait_ms, "%lld", (long long)kafka_config()->fetch_wait_ms);
    /* A consumer that does not poll for this long is put out of its group.
     * Ours poll even while they wait out a database outage (consumer.c). */
    snprintf(max_poll_ms, sizeof max_poll_ms, "%lld",
             (long long)kafka_config()->max_poll_interval_ms);
    rd_kafka_conf_t *conf = base_conf(brokers, client_id);
    if (!conf)
        return NULL;
    if (!set(conf, "group.id", group) || !set(conf, "enable.auto.commit", "false") ||
        !set(conf, "enable.auto.offset.store", "false") ||
        !set(conf, "auto.offset.reset", "earliest") ||
        /* A member that died is noticed after this long, and its
         * partitions go to the others (the broker's minimum). */
        !set(conf, "session.timeout.ms", "6000") || !set(conf, "heartbeat.interval.ms", "2000") ||
        /* Kafka answers a fetch as soon as one byte is there; the wait only
         * bounds an idle fetch, so it costs no latency. */
        !set(conf, "fetch.min.bytes", "1") || !set(conf, "fetch.wait.max.ms", fetch_wait_ms) ||
        !set(conf, "max.poll.interval.ms", max_poll_ms)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    if (hooks) {
        if (hooks->rebalance)
            rd_kafka_conf_set_rebalance_cb(conf, hooks->rebalance);
        if (hooks->committed)
            rd_kafka_conf_set_offset_commit_cb(conf, hooks->committed);
        rd_kafka_conf_set_opaque(conf, hooks->opaque);
    }
    char err[256];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk) {
        log_msg(LOG_ERROR, NULL, "kafka consumer: %s", err);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    size_t n = 0;
    while (topics[n])
        n++;
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(subs, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (e) {
        log_msg(LOG_ERROR, NULL, "kafka subscribe: %s", rd_kafka_err2str(e));
        rd_kafka_destroy(rk);
        return NULL;
    }
    return rk;
}

bool kafka_reachable(rd_kafka_t *rk, int timeout_ms)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, NULL, &md, timeout_ms);
    if (md)
        rd_kafka_metadata_destroy(md);
    return e == RD_KAFKA_RESP_ERR_NO_ERROR;
}

rd_kafka_t *kafka_observer_new(const char *brokers, const char *client_id, const char *group)
{
    rd_kafka_conf_t *conf = base_conf(brokers, client_id);
    if (!conf)
        return NULL;
    /* Never subscribed: it never joins `group`, never owns a partition and
     * has nothing to commit (said again here, for the reader). */
    if (!set(conf, "group.id", group) || !set(conf, "enable.auto.commit", "false") ||
        !set(conf, "enable.auto.offset.store", "false")) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    char err[256];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk)
        log_msg(LOG_ERROR, NULL, "kafka observer: %s", err);
    return rk;
}

int kafka_end_offsets(rd_kafka_t *rk, const char *topic, int64_t *out, int max, int timeout_ms)
{
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int n = -ETIMEDOUT;
    if (t && rd_kafka_metadata(rk, 0, t, &md, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        md->topic_cnt == 1 && !md->topics[0].err && md->topics[0].partition_cnt <= max)
        n = md->topics[0].partition_cnt;
    if (md)
        rd_kafka_metadata_destroy(md);
    if (t)
        rd_kafka_topic_destroy(t);
    for (int p = 0; p < n; p++) {
        int64_t low, high;
        if (rd_kafka_query_watermark_offsets(rk, topic, p, &low, &high, timeout_ms))
            return -ETIMEDOUT;
        out[p] = high;
    }
    return n;
}

/* With the consumer group's own OffsetFetch (rd_kafka_committed), not the
 * admin API's ListConsumerGroupOffsets: in librdkafka 2.0 (Debian 12) the
 * latter aborts the process (rd_kafka_enq_once_del_source_return: Assertion
 * `eonce->refcnt > 0') when the group's coordinator moves while a request
 * is out, as it does when a broker of the cluster dies (librdkafka issues
 * 4605, 3663; the three-node drill saw it). */
int kafka_group_offsets(rd_kafka_t *rk, const char *topic, int n, int64_t *out, int timeout_ms)
{
    /* Errors and statistics queue up on a handle nobody polls. */
    rd_kafka_poll(rk, 0);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p);
    int rc =
        rd_kafka_committed(rk, parts, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : -ETIMEDOUT;
    for (int p = 0; p < n; p++)
        out[p] = -1;
    for (int i = 0; rc == 0 && i < parts->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &parts->elems[i];
        if (tp->err)
            rc = -EIO;
        else if (tp->partition >= 0 && tp->partition < n)
            out[tp->partition] = tp->offset >= 0 ? tp->offset : -1;
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return rc;
}

void kafka_destroy(rd_kafka_t *rk)
{
    if (!rk)
        return;
    if (rd_kafka_type(rk) == RD_KAFKA_PRODUCER)
        rd_kafka_flush(rk, 5000);
    else
        rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}
