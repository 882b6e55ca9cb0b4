/* Kafka through librdkafka: an idempotent producer and a consumer whose
 * offsets move only when the application says so. Thin on purpose: the
 * outbox relay and the inbox consumers own the policy. */
#ifndef SHOP_KAFKA_H
#define SHOP_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>

/* An idempotent producer (acks=all, in-order, no duplicates on retry).
 * `dr_cb` receives delivery reports from kafka_poll; may be NULL.
 * Returns NULL and logs why on a configuration error. */
rd_kafka_t *kafka_producer_new(const char *brokers, const char *client_id,
                               void (*dr_cb)(rd_kafka_t *, const rd_kafka_message_t *, void *),
                               void *opaque);

/* A consumer in `group` subscribed to `topics` (NULL-terminated). Offsets
 * are neither stored nor committed automatically: the caller commits after
 * its database transaction. Starts at the earliest offset of a new group. */
rd_kafka_t *kafka_consumer_new(const char *brokers, const char *group, const char *client_id,
                               const char *const *topics);

/* True when the cluster answers a metadata request within `timeout_ms`. */
bool kafka_reachable(rd_kafka_t *rk, int timeout_ms);

/* Flushes (producers) or closes (consumers) and destroys. NULL-safe. */
void kafka_destroy(rd_kafka_t *rk);

#endif
