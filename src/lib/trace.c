#include "lib/trace.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/metrics.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static const cfg_setting trace_settings_list[] = {
    CFG_S("OTEL_SDK_DISABLED", trace_settings, disabled, "false", "true: no span is made or sent"),
    CFG_S("OTEL_TRACES_EXPORTER", trace_settings, exporter, "none",
          "zipkin (Zipkin v2 JSON over HTTP) or none"),
    CFG_S("OTEL_EXPORTER_ZIPKIN_ENDPOINT", trace_settings, endpoint,
          "http://127.0.0.1:9411/api/v2/spans", "where spans are sent"),
    CFG_S("OTEL_SERVICE_NAME", trace_settings, service, "",
          "the service's name in its spans (empty: orders, payments or identity)"),
    CFG_S("OTEL_TRACES_SAMPLER", trace_settings, sampler, "parentbased_always_on",
          "always_on, always_off, traceidratio, ratelimiting, or parentbased_ before one of "
          "them: which new traces are recorded (a parent's decision is followed)"),
    CFG_S("OTEL_TRACES_SAMPLER_ARG", trace_settings, ratio, "1.0",
          "traceidratio's share of new traces recorded, from 0 to 1; ratelimiting's new traces "
          "recorded a second, at most (the stack's default: parentbased_ratelimiting, 10)"),
    CFG_I("OTEL_EXPORTER_ZIPKIN_TIMEOUT", trace_settings, timeout_ms, 100, 600000, 10000,
          "a batch the collector has not taken within this (ms) is dropped and counted"),
    CFG_I("OTEL_BSP_MAX_QUEUE_SIZE", trace_settings, queue, 1, 1000000, 2048,
          "spans waiting to be sent; past it a span is dropped and counted, never waited for"),
    CFG_I("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", trace_settings, batch, 1, 100000, 512,
          "spans sent in one request"),
    CFG_I("OTEL_BSP_SCHEDULE_DELAY", trace_settings, delay_ms, 1, 3600000, 5000,
          "the longest a span waits before it is sent (ms); a full batch goes at once"),
};
const cfg_table trace_settings_table = CFG_TABLE("trace", trace_settings_list);

struct tracer {
    char service[64];
    char endpoint[512];
    bool parent_based;
    double ratio;         /* of new traces recorded: 0, 1, or between */
    uint64_t ratio_bound; /* a trace id's low 8 bytes below it: recorded */
    /* ratelimiting: a bucket of `per_s` tokens a second, holding at most
     * max(1, per_s); a new trace takes one, or is not recorded. */
    double per_s; /* 0: not this sampler */
    pthread_mutex_t bucket_lock;
    double tokens;
    int64_t filled_us; /* clock_now_us when it was last filled */
    int timeout_ms, batch, delay_ms;

    pthread_mutex_t lock;
    pthread_cond_t wake;
    json_t **queue; /* a ring of encoded spans */
    int cap, head, count;
    bool stopping;
    pthread_t thread;
    bool failing; /* the last export failed (the exporter thread's own) */

    _Atomic uint64_t exported, dropped, failed;
};

/* ---- trace context ---- */

static int unhex(char c)
{
    /* The recommendation allows lower-case hex only. */
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Reads 2n hex characters into n bytes; false on anything else. */
static bool read_hex(const char *s, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = unhex(s[2 * i]), lo = hi < 0 ? -1 : unhex(s[2 * i + 1]);
        if (lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

int trace_parse(const char *s, trace_ctx *out)
{
    uint8_t version, flags;
    trace_ctx c = {0};
    if (!s || strlen(s) < TRACE_PARENT_LEN || !read_hex(s, &version, 1) || version == 0xff ||
        s[2] != '-' || !read_hex(s + 3, c.trace_id, 16) || s[35] != '-' ||
        !read_hex(s + 36, c.span_id, 8) || s[52] != '-' || !read_hex(s + 53, &flags, 1))
        return -EINVAL;
    /* Version 00 is exactly this long; a later one may carry more fields
     * after a dash, which a reader of 00 ignores. */
    if ((version == 0 && s[TRACE_PARENT_LEN] != '\0') ||
        (version != 0 && s[TRACE_PARENT_LEN] != '\0' && s[TRACE_PARENT_LEN] != '-'))
        return -EINVAL;
    if (all_zero(c.trace_id, 16) || all_zero(c.span_id, 8))
        return -EINVAL;
    c.sampled = flags & 1;
    *out = c;
    return 0;
}

bool trace_valid(const trace_ctx *c)
{
    return !all_zero(c->trace_id, 16) && !all_zero(c->span_id, 8);
}

void trace_hex(const uint8_t *bytes, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}

void trace_log_context(const trace_ctx *c)
{
    if (!c || !c->sampled) {
        log_trace(NULL, NULL);
        return;
    }
    char trace[33], span[17];
    trace_hex(c->trace_id, 16, trace);
    trace_hex(c->span_id, 8, span);
    log_trace(trace, span);
}

void trace_format(const trace_ctx *c, char out[TRACE_PARENT_LEN + 1])
{
    char trace[33], span[17];
    trace_hex(c->trace_id, 16, trace);
    trace_hex(c->span_id, 8, span);
    snprintf(out, TRACE_PARENT_LEN + 1, "00-%s-%s-%s", trace, span, c->sampled ? "01" : "00");
}

/* Random ids, never all zero (an all-zero id means "none"). */
static void random_id(uint8_t *out, size_t n)
{
    /* getrandom never returns short for 256 bytes or fewer once the
     * kernel's pool is ready, which it is long before a service starts. */
    while (getrandom(out, n, 0) != (ssize_t)n || all_zero(out, n))
        ;
}

/* ---- spans ---- */

/* Takes a token of the rate limiter's bucket, if there is one. */
static bool take_token(tracer *t)
{
    pthread_mutex_lock(&t->bucket_lock);
    int64_t now = clock_now_us();
    double cap = t->per_s > 1 ? t->per_s : 1;
    t->tokens += (double)(now - t->filled_us) / 1e6 * t->per_s;
    if (t->tokens > cap)
        t->tokens = cap;
    t->filled_us = now;
    bool took = t->tokens >= 1;
    if (took)
        t->tokens -= 1;
    pthread_mutex_unlock(&t->bucket_lock);
    return took;
}

bool tracer_samples(tracer *t, const uint8_t trace_id[16])
{
    if (t && t->per_s > 0)
        return take_token(t);
    if (!t || t->ratio <= 0)
        return false;
    if (t->ratio >= 1)
        return true;
    /* The trace id's last 8 bytes are random (W3C: "at least 7 of the
     * right-most bytes"), so every service that samples a trace by its id
     * decides alike. */
    uint64_t low = 0;
    for (int i = 8; i < 16; i++)
        low = low << 8 | trace_id[i];
    return low < t->ratio_bound;
}

/* A recorded span's start: the wall clock for its timestamp, the
 * monotonic one for its duration. */
static void stamp(trace_span *span)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    span->start_us = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
    span->begun_us = clock_now_us();
}

void trace_begin(tracer *t, trace_span *span, const trace_ctx *parent, const char *name,
                 trace_kind kind)
{
    *span = (trace_span){.kind = kind};
    snprintf(span->name, sizeof span->name, "%s", name);
    if (parent) {
        memcpy(span->ctx.trace_id, parent->trace_id, sizeof span->ctx.trace_id);
        memcpy(span->parent_id, parent->span_id, sizeof span->parent_id);
        span->ctx.sampled =
            t && (t->parent_based ? parent->sampled : tracer_samples(t, parent->trace_id));
    } else if (t) {
        random_id(span->ctx.trace_id, sizeof span->ctx.trace_id);
        span->ctx.sampled = tracer_samples(t, span->ctx.trace_id);
    } else {
        return; /* no trace to continue and none to start: no ids (all zero) */
    }
    random_id(span->ctx.span_id, sizeof span->ctx.span_id);
    if (span->ctx.sampled)
        stamp(span);
}

void trace_begin_recorded(tracer *t, trace_span *span, const char *name, trace_kind kind)
{
    *span = (trace_span){.kind = kind};
    if (!t)
        return;
    snprintf(span->name, sizeof span->name, "%s", name);
    random_id(span->ctx.trace_id, sizeof span->ctx.trace_id);
    random_id(span->ctx.span_id, sizeof span->ctx.span_id);
    span->ctx.sampled = true;
    stamp(span);
}

void trace_tag(trace_span *span, const char *key, const char *value)
{
    if (!span->ctx.sampled || !value)
        return;
    if (!span->tags)
        span->tags = json_object();
    json_object_set_new(span->tags, key, json_string(value));
}

void trace_tag_int(trace_span *span, const char *key, int64_t value)
{
    if (!span->ctx.sampled)
        return;
    char text[24];
    snprintf(text, sizeof text, "%lld", (long long)value);
    trace_tag(span, key, text);
}

static const char *const kinds[] = {NULL, "SERVER", "CLIENT", "PRODUCER", "CONSUMER"};

json_t *trace_zipkin(const trace_span *span, const char *service)
{
    char trace[33], id[17], parent[17];
    trace_hex(span->ctx.trace_id, 16, trace);
    trace_hex(span->ctx.span_id, 8, id);
    json_t *j = json_pack("{s:s,s:s,s:s,s:I,s:I,s:{s:s}}", "traceId", trace, "id", id, "name",
                          span->name, "timestamp", (json_int_t)span->start_us, "duration",
                          (json_int_t)(span->duration_us > 0 ? span->duration_us : 1),
                          "localEndpoint", "serviceName", service);
    if (!j)
        return NULL;
    if (!all_zero(span->parent_id, 8)) {
        trace_hex(span->parent_id, 8, parent);
        json_object_set_new(j, "parentId", json_string(parent));
    }
    if (kinds[span->kind])
        json_object_set_new(j, "kind", json_string(kinds[span->kind]));
    if (span->tags)
        json_object_set(j, "tags", span->tags);
    return j;
}

void trace_end(tracer *t, trace_span *span)
{
    if (t && span->ctx.sampled) {
        span->duration_us = clock_now_us() - span->begun_us;
        json_t *j = trace_zipkin(span, t->service);
        bool queued = false;
        pthread_mutex_lock(&t->lock);
        if (j && t->count < t->cap && !t->stopping) {
            t->queue[(t->head + t->count++) % t->cap] = j;
            queued = true;
            if (t->count >= t->batch)
                pthread_cond_signal(&t->wake);
        }
        pthread_mutex_unlock(&t->lock);
        if (!queued) {
            json_decref(j);
            atomic_fetch_add(&t->dropped, 1);
        }
    }
    json_decref(span->tags);
    span->tags = NULL;
}

/* ---- the exporter ---- */

static size_t discard(char *data, size_t size, size_t n, void *arg)
{
    (void)data, (void)arg;
    return size * n;
}

/* POSTs one batch; true when the collector took it (2xx). */
static bool send_batch(tracer *t, CURL *curl, json_t *batch)
{
    char *body = json_dumps(batch, JSON_COMPACT);
    if (!body)
        return false;
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(curl, CURLOPT_URL, t->endpoint);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)t->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
    long status = 0;
    CURLcode rc = curl_easy_perform(curl);
    if (rc == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    free(body);
    bool ok = rc == CURLE_OK && status >= 200 && status < 300;
    /* Said once when the collector starts failing and once when it is
     * back: a collector down for an hour is one line, not 720. */
    if (!ok && !t->failing)
        log_msg(LOG_WARN, NULL,
                "trace export to %s failed (%s, HTTP %ld): spans are dropped "
                "until it answers (trace_exports_failed_total)",
                t->endpoint, rc == CURLE_OK ? "answered" : curl_easy_strerror(rc), status);
    else if (ok && t->failing)
        log_msg(LOG_INFO, NULL, "trace export to %s works again", t->endpoint);
    t->failing = !ok;
    return ok;
}

/* Sends what is queued, a batch at a time, until a batch is short or the
 * tracer stops; a batch is sent when it is full or its oldest span has
 * waited OTEL_BSP_SCHEDULE_DELAY. */
static void *exporter_main(void *arg)
{
    pthread_setname_np(pthread_self(), "traces");
    tracer *t = arg;
    CURL *curl = curl_easy_init();
    pthread_mutex_lock(&t->lock);
    for (;;) {
        if (!t->stopping && t->count < t->batch) {
            struct timespec until = clock_deadline(t->delay_ms);
            while (!t->stopping && t->count < t->batch &&
                   pthread_cond_timedwait(&t->wake, &t->lock, &until) == 0)
                ;
        }
        if (t->count == 0) {
            if (t->stopping)
                break;
            continue;
        }
        json_t *batch = json_array();
        int n = 0;
        for (; n < t->batch && t->count > 0; n++) {
            json_array_append_new(batch, t->queue[t->head]);
            t->head = (t->head + 1) % t->cap;
            t->count--;
        }
        pthread_mutex_unlock(&t->lock);
        bool sent = curl && send_batch(t, curl, batch);
        atomic_fetch_add(sent ? &t->exported : &t->failed, (uint64_t)n);
        json_decref(batch);
        pthread_mutex_lock(&t->lock);
        /* Stopping, a collector that did not take one batch is not waited
         * for again: the rest is dropped, counted. */
        if (t->stopping && !sent) {
            atomic_fetch_add(&t->failed, (uint64_t)t->count);
            for (; t->count > 0; t->count--, t->head = (t->head + 1) % t->cap)
                json_decref(t->queue[t->head]);
        }
    }
    pthread_mutex_unlock(&t->lock);
    curl_easy_cleanup(curl);
    return NULL;
}

/* Reads OTEL_TRACES_SAMPLER and its argument. */
static int read_sampler(tracer *t, const trace_settings *s)
{
    const char *name = s->sampler;
    t->parent_based = strncmp(name, "parentbased_", 12) == 0;
    if (t->parent_based)
        name += 12;
    if (strcmp(name, "always_on") == 0) {
        t->ratio = 1;
    } else if (strcmp(name, "always_off") == 0) {
        t->ratio = 0;
    } else if (strcmp(name, "ratelimiting") == 0) {
        /* Jaeger's and Brave's sampler of that name: every trace at a
         * human's pace, a bounded number under load. Not among the SDK's
         * own values, which have nothing of the kind. */
        char *end = NULL;
        errno = 0;
        t->per_s = strtod(s->ratio, &end);
        if (errno || end == s->ratio || *end || !(t->per_s > 0 && t->per_s <= 1e6)) {
            log_msg(LOG_ERROR, NULL,
                    "OTEL_TRACES_SAMPLER_ARG=%s is not a number of traces a second (above 0, "
                    "at most 1000000)",
                    s->ratio);
            return -EINVAL;
        }
        t->ratio = 1;
        t->tokens = t->per_s > 1 ? t->per_s : 1;
        t->filled_us = clock_now_us();
    } else if (strcmp(name, "traceidratio") == 0) {
        char *end = NULL;
        errno = 0;
        t->ratio = strtod(s->ratio, &end);
        if (errno || end == s->ratio || *end || !(t->ratio >= 0 && t->ratio <= 1)) {
            log_msg(LOG_ERROR, NULL, "OTEL_TRACES_SAMPLER_ARG=%s is not a share from 0 to 1",
                    s->ratio);
            return -EINVAL;
        }
    } else {
        log_msg(LOG_ERROR, NULL,
                "OTEL_TRACES_SAMPLER=%s is none of always_on, always_off, traceidratio, "
                "ratelimiting and their parentbased_ forms",
                s->sampler);
        return -EINVAL;
    }
    /* ratio * 2^64, kept below 2^64 */
    t->ratio_bound = t->ratio >= 1 ? UINT64_MAX : (uint64_t)(t->ratio * 18446744073709551615.0);
    return 0;
}

int tracer_start(const trace_settings *s, const char *name, tracer **out)
{
    *out = NULL;
    if (strcmp(s->disabled, "true") == 0 || strcmp(s->exporter, "none") == 0)
        return 0;
    if (strcmp(s->exporter, "zipkin") != 0) {
        log_msg(LOG_ERROR, NULL, "OTEL_TRACES_EXPORTER=%s: only zipkin and none are built in",
                s->exporter);
        return -EINVAL;
    }
    if (strcmp(s->disabled, "false") != 0) {
        log_msg(LOG_ERROR, NULL, "OTEL_SDK_DISABLED=%s is neither true nor false", s->disabled);
        return -EINVAL;
    }
    tracer *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    int rc = read_sampler(t, s);
    if (rc < 0) {
        free(t);
        return rc;
    }
    snprintf(t->service, sizeof t->service, "%s", s->service[0] ? s->service : name);
    snprintf(t->endpoint, sizeof t->endpoint, "%s", s->endpoint);
    t->timeout_ms = (int)s->timeout_ms;
    t->batch = (int)s->batch;
    t->delay_ms = (int)s->delay_ms;
    t->cap = (int)s->queue;
    if (!(t->queue = calloc((size_t)t->cap, sizeof *t->queue))) {
        free(t);
        return -ENOMEM;
    }
    pthread_mutex_init(&t->lock, NULL);
    pthread_mutex_init(&t->bucket_lock, NULL);
    pthread_cond_init(&t->wake, NULL);
    if (pthread_create(&t->thread, NULL, exporter_main, t) != 0) {
        pthread_mutex_destroy(&t->lock);
        pthread_mutex_destroy(&t->bucket_lock);
        pthread_cond_destroy(&t->wake);
        free(t->queue);
        free(t);
        return -ENOMEM;
    }
    *out = t;
    return 0;
}

void tracer_stop(tracer *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    t->stopping = true;
    pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    pthread_mutex_destroy(&t->lock);
    pthread_mutex_destroy(&t->bucket_lock);
    pthread_cond_destroy(&t->wake);
    free(t->queue);
    free(t);
}

void tracer_metrics(tracer *t, FILE *out)
{
    metrics_series(out, "trace_spans_exported_total", "counter",
                   "Spans the collector took (OTEL_EXPORTER_ZIPKIN_ENDPOINT)",
                   t ? atomic_load(&t->exported) : 0);
    metrics_series(out, "trace_spans_dropped_total", "counter",
                   "Spans dropped because the export queue was full (OTEL_BSP_MAX_QUEUE_SIZE)",
                   t ? atomic_load(&t->dropped) : 0);
    metrics_series(out, "trace_exports_failed_total", "counter",
                   "Spans in batches the collector did not take in time (dropped)",
                   t ? atomic_load(&t->failed) : 0);
}
