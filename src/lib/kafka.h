/* Kafka through librdkafka: an idempotent producer and a consumer whose
 * offsets move only when the application says so. Thin on purpose: the
 * outbox relay and the inbox consumers own the policy. Its settings
 * (kafka_settings_table) are read once, by kafka_settings_load or at the
 * first client made. */
#ifndef SHOP_KAFKA_H
#define SHOP_KAFKA_H

#include "lib/config.h"

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct kafka_settings {
    const char *brokers, *sasl_username, *sasl_password_file;
    int64_t fetch_wait_ms, message_timeout_ms, max_poll_interval_ms;
} kafka_settings;
extern const cfg_table kafka_settings_table;

/* Reads the settings (once; later calls return the first answer): 0, or a
 * negative code after logging the bad one (the defaults then stand). */
int kafka_settings_load(void);

/* The settings read (loaded now if they were not). */
const kafka_settings *kafka_config(void);

/* How long a produced message may take, retries included, before its
 * delivery report says it failed (message.timeout.ms). */
int kafka_message_timeout_ms(void);

/* An idempotent producer (acks=all, in-order, no duplicates on retry).
 * `dr_cb` receives delivery reports from rd_kafka_poll; may be NULL.
 * Returns NULL and logs why on a configuration error. */
rd_kafka_t *kafka_producer_new(const char *brokers, const char *client_id,
                               void (*dr_cb)(rd_kafka_t *, const rd_kafka_message_t *, void *),
                               void *opaque);

/* What a consumer's owner hears of, from inside rd_kafka_consumer_poll. */
typedef struct kafka_consumer_hooks {
    /* Partitions assigned or revoked. When set, it must call rd_kafka_assign
     * itself (librdkafka's rule); when NULL, librdkafka does. */
    void (*rebalance)(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *partitions, void *opaque);
    /* The outcome of each offset commit; may be NULL. */
    void (*committed)(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque);
    void *opaque;
} kafka_consumer_hooks;

/* A consumer in `group` subscribed to `topics` (NULL-terminated). Offsets
 * are neither stored nor committed automatically: the caller commits after
 * its database transaction. Starts at the earliest offset of a new group.
 * `hooks` may be NULL. */
rd_kafka_t *kafka_consumer_new(const char *brokers, const char *group, const char *client_id,
                               const char *const *topics, const kafka_consumer_hooks *hooks);

/* True when the cluster answers a metadata request within `timeout_ms`. */
bool kafka_reachable(rd_kafka_t *rk, int timeout_ms);

/* A consumer that watches `group` from outside: it never subscribes, so
 * it never joins the group nor takes its partitions; it asks the group's
 * coordinator how far the group has read (kafka_group_offsets), and the
 * cluster for metadata and end offsets. It takes Describe on the group.
 * NULL, logged, on a configuration error. */
rd_kafka_t *kafka_observer_new(const char *brokers, const char *client_id, const char *group);

/* Each partition's end offset (the next offset to be written) of `topic`,
 * into out[0..max): returns the partition count, or -ETIMEDOUT when the broker
 * does not answer within timeout_ms (per request; one per partition). */
int kafka_end_offsets(rd_kafka_t *rk, const char *topic, int64_t *out, int max, int timeout_ms);

/* The offsets the group `rk` watches (kafka_observer_new) has committed
 * for partitions 0..n-1 of `topic`, into out[] (-1: none yet): how far that
 * group has read. 0, -ETIMEDOUT when the broker does not answer, or -EIO
 * when it refuses. */
int kafka_group_offsets(rd_kafka_t *rk, const char *topic, int n, int64_t *out, int timeout_ms);

/* Flushes (producers) or closes (consumers) and destroys. NULL-safe. */
void kafka_destroy(rd_kafka_t *rk);

#endif
