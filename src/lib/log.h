/* JSON-lines logging to stderr: one object per line with ts, level, svc,
 * msg and, when known, req_id. The stack's scripts send stderr to
 * var/log/<svc>.log. */
#ifndef SHOP_LOG_H
#define SHOP_LOG_H

#include <jansson.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

/* Call once at start-up, before any thread starts. `svc` is borrowed for
 * the life of the process. */
void log_init(const char *svc, log_level min_level);

/* Parses "debug", "info", "warn" or "error"; unknown names give LOG_INFO. */
log_level log_level_parse(const char *name);

/* Writes one line atomically (a single write(2)). `req_id` may be NULL. */
void log_msg(log_level level, const char *req_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like log_msg, and merges the members of `fields` into the line.
 * Steals the reference to `fields` (may be NULL). */
void log_fields(log_level level, const char *req_id, json_t *fields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* True when a message of `level` would be written. */
int log_enabled(log_level level);

/* The trace the calling thread works for now (lower-case hex; NULL: none):
 * every line it writes until the next call carries `trace_id` and
 * `span_id`. Thread-local, the one piece of per-thread state in the tree:
 * a log line deep inside a module cannot be handed its request's trace
 * through every call between (OpenTelemetry's SDKs keep their context the
 * same way). Both strings are copied. */
void log_trace(const char *trace_id, const char *span_id);

#endif
