#include "lib/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Set once by log_init before threads start, read-only afterwards. */
static const char *log_svc = "shop";
static log_level log_min = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* log_trace's: empty when the thread works for no trace. */
static _Thread_local char trace_id[33], span_id[17];

void log_trace(const char *trace, const char *span)
{
    snprintf(trace_id, sizeof trace_id, "%s", trace ? trace : "");
    snprintf(span_id, sizeof span_id, "%s", span ? span : "");
}

void log_init(const char *svc, log_level min_level)
{
    log_svc = svc;
    log_min = min_level;
}

log_level log_level_parse(const char *name)
{
    for (size_t i = 0; name && i < sizeof level_names / sizeof *level_names; i++)
        if (strcmp(name, level_names[i]) == 0)
            return (log_level)i;
    return LOG_INFO;
}

int log_enabled(log_level level)
{
    return level >= log_min;
}

static void log_write(log_level level, const char *req_id, json_t *fields, const char *fmt,
                      va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    char ts[40];
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03ldZ", now.tv_nsec / 1000000);

    json_t *line = json_pack("{s:s, s:s, s:s, s:s}", "ts", ts, "level", level_names[level], "svc",
                             log_svc, "msg", msg);
    if (!line)
        goto done;
    if (req_id)
        json_object_set_new(line, "req_id", json_string(req_id));
    if (trace_id[0]) {
        json_object_set_new(line, "trace_id", json_string(trace_id));
        json_object_set_new(line, "span_id", json_string(span_id));
    }
    if (fields)
        json_object_update_missing(line, fields);

    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    if (text) {
        size_t len = strlen(text);
        text[len] = '\n'; /* replaces the terminator: written by length */
        ssize_t ignored = write(STDERR_FILENO, text, len + 1);
        (void)ignored;
        free(text);
    }
done:
    json_decref(line);
    json_decref(fields);
}

void log_msg(log_level level, const char *req_id, const char *fmt, ...)
{
    if (level < log_min)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_write(level, req_id, NULL, fmt, ap);
    va_end(ap);
}

void log_fields(log_level level, const char *req_id, json_t *fields, const char *fmt, ...)
{
    if (level < log_min) {
        json_decref(fields);
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    log_write(level, req_id, fields, fmt, ap);
    va_end(ap);
}
