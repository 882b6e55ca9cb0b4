/* Distributed traces (docs/architecture.md, "Traces"): W3C Trace Context
 * (the `traceparent` header, and the same text in a Kafka header and an
 * outbox row) and spans exported in batches to a Zipkin v2 collector
 * (Zipkin, Jaeger, the OpenTelemetry Collector and Grafana Tempo all take
 * it), configured by the OpenTelemetry SDK's own variables.
 *
 * There is no OpenTelemetry SDK for C in Debian; this is the smallest
 * exporter that is correct: a span is encoded when it ends, queued in a
 * bounded queue, and sent by a background thread with libcurl, so a slow
 * or absent collector never delays a request: when the queue is full a
 * span is dropped and counted (trace_spans_dropped_total).
 *
 * A tracer is made by svc_run and borrowed by everything that traces; a
 * NULL tracer (OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER=none) traces
 * nothing, and every function here takes it. */
#ifndef SHOP_TRACE_H
#define SHOP_TRACE_H

#include "lib/config.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define TRACE_PARENT_LEN 55

/* The header that carries it, in HTTP and in a Kafka message alike. */
#define TRACE_HEADER "traceparent"

/* Where a span stands in its trace. */
typedef struct trace_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    bool sampled;
} trace_ctx;

/* Reads a `traceparent` (version 00, or a later version's first four
 * fields, as the W3C recommendation asks). Returns 0, or -EINVAL for a
 * malformed one (upper-case hex, a zero id, version ff, ...): the caller
 * then starts a new trace. Pure. */
int trace_parse(const char *traceparent, trace_ctx *out);

/* True when `ctx` names a trace (its ids not zero). Pure. */
bool trace_valid(const trace_ctx *ctx);

/* Writes `ctx` as a version-00 `traceparent`. Pure. */
void trace_format(const trace_ctx *ctx, char out[TRACE_PARENT_LEN + 1]);

/* From now on, the log lines of the calling thread carry the ids of `ctx`
 * when it is sampled, and none when it is not or is NULL (log_trace). */
void trace_log_context(const trace_ctx *ctx);

/* Lower-case hex of `n` bytes into out (2n + 1 bytes). Pure. */
void trace_hex(const uint8_t *bytes, size_t n, char *out);

typedef enum {
    TRACE_INTERNAL,
    TRACE_SERVER,
    TRACE_CLIENT,
    TRACE_PRODUCER,
    TRACE_CONSUMER
} trace_kind;

/* A span being timed. Filled by trace_begin; its tags are the span's own
 * until trace_end. */
typedef struct trace_span {
    trace_ctx ctx;        /* its trace, its own id, and whether it is sampled */
    uint8_t parent_id[8]; /* all zero: the trace's root */
    char name[96];        /* e.g. "POST /orders/{id}" */
    trace_kind kind;
    int64_t start_us; /* wall clock, µs since the epoch */
    int64_t begun_us; /* clock_now_us at the start: the duration's origin */
    int64_t duration_us;
    json_t *tags; /* string values (NULL: none yet; only when sampled) */
} trace_span;

/* The OpenTelemetry SDK's variables, as far as a Zipkin exporter reads
 * them. */
typedef struct trace_settings {
    const char *disabled; /* OTEL_SDK_DISABLED: "true" turns tracing off */
    const char *exporter; /* OTEL_TRACES_EXPORTER: zipkin or none */
    const char *endpoint; /* OTEL_EXPORTER_ZIPKIN_ENDPOINT */
    const char *service;  /* OTEL_SERVICE_NAME (empty: the service's name) */
    const char *sampler;  /* OTEL_TRACES_SAMPLER */
    const char *ratio;    /* OTEL_TRACES_SAMPLER_ARG */
    int64_t timeout_ms;   /* OTEL_EXPORTER_ZIPKIN_TIMEOUT */
    int64_t queue;        /* OTEL_BSP_MAX_QUEUE_SIZE */
    int64_t batch;        /* OTEL_BSP_MAX_EXPORT_BATCH_SIZE */
    int64_t delay_ms;     /* OTEL_BSP_SCHEDULE_DELAY */
} trace_settings;

extern const cfg_table trace_settings_table;

typedef struct tracer tracer;

/* Starts the exporter for service `name` (OTEL_SERVICE_NAME wins). Returns
 * 0 with *out set, NULL when tracing is off; or -EINVAL after logging a
 * setting that cannot be read (an unknown sampler or exporter, a ratio
 * outside [0, 1]), or -ENOMEM. */
int tracer_start(const trace_settings *s, const char *name, tracer **out);

/* Sends what is queued (waiting at most OTEL_EXPORTER_ZIPKIN_TIMEOUT),
 * stops the thread and frees the tracer. NULL-safe. */
void tracer_stop(tracer *t);

/* True when a span whose trace has no sampled parent would be recorded:
 * the sampler's decision for a new trace with this id (ratelimiting: it
 * takes a token, when one is left). */
bool tracer_samples(tracer *t, const uint8_t trace_id[16]);

/* Starts `span` named `name` (copied): the child of `parent` when it
 * is not NULL (its trace, its sampled flag: parent-based sampling), else
 * the root of a new trace, sampled as the sampler says. With a NULL
 * tracer a child still gets its own id (the trace goes on through this
 * service unrecorded), and a root gets none (all zero: trace_valid is
 * false, and nothing is passed on). */
void trace_begin(tracer *t, trace_span *span, const trace_ctx *parent, const char *name,
                 trace_kind kind);

/* Starts `span` as the root of a new trace that is recorded whatever the
 * sampler says (a consumer's batch, recorded when one of its messages
 * is). With a NULL tracer, a span without ids. */
void trace_begin_recorded(tracer *t, trace_span *span, const char *name, trace_kind kind);

/* Adds a tag (a copy of `value`) to a sampled span; nothing otherwise. */
void trace_tag(trace_span *span, const char *key, const char *value);
void trace_tag_int(trace_span *span, const char *key, int64_t value);

/* Ends the span now: its duration is taken, and a sampled span is queued
 * for export (or dropped and counted when the queue is full). Frees its
 * tags. */
void trace_end(tracer *t, trace_span *span);

/* The span as one element of a Zipkin v2 JSON array, for `service`.
 * Caller owns the result. Pure. */
json_t *trace_zipkin(const trace_span *span, const char *service);

/* trace_spans_exported_total, trace_spans_dropped_total (the queue full),
 * trace_exports_failed_total (a batch the collector did not take). */
void tracer_metrics(tracer *t, FILE *out);

#endif
