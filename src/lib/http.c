#include "lib/http.h"
#include "lib/valid.h"
#include "lib/log.h"
#include "lib/metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/random.h>
#include <time.h>

/* Statuses that get their own metrics series; anything else is "other". */
static const int tracked_statuses[] = {200, 201, 204, 400, 404, 405,
                                       409, 413, 422, 500, 503, 0 /* other */};
#define NSTATUS (sizeof tracked_statuses / sizeof *tracked_statuses)

enum { BUILTIN_HEALTHZ, BUILTIN_READYZ, BUILTIN_METRICS, BUILTIN_UNMATCHED, NBUILTIN };
static const char *const builtin_names[NBUILTIN] = {"/healthz", "/readyz", "/metrics", "unmatched"};

struct http_server {
    struct MHD_Daemon *daemon;
    const http_route *routes;
    size_t nroutes;
    http_hooks hooks;
    void *app;
    size_t max_body;
    metrics_histogram *latency; /* [(nroutes + NBUILTIN) * NSTATUS] */
    tracer *traces;
};

/* Oversized bodies up to this size are read and dropped before the 413. */
#define DRAIN_MAX (1024 * 1024)

/* Per-request state, freed when MHD reports the request completed. */
typedef struct req_ctx {
    http_req req;
    http_server *srv;
    struct timespec start;
    char *buf;
    size_t cap;
    bool too_large;
    int route; /* index for metrics */
    int status;
    char req_id[HTTP_REQ_ID_MAX + 1];
    char params_buf[512];
    bool suspended; /* http_suspend; the answer comes through http_resume */
    http_res answer;
    trace_span span; /* the server span, from the first call to completion */
} req_ctx;

/* http_pending is the request's context: req is its first member. */
_Static_assert(offsetof(req_ctx, req) == 0, "http_suspend finds the context from the request");

static double elapsed_s(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static size_t status_slot(int status)
{
    for (size_t i = 0; i + 1 < NSTATUS; i++)
        if (tracked_statuses[i] == status)
            return i;
    return NSTATUS - 1;
}

bool http_request_id_valid(const char *id)
{
    size_t n = 0;
    for (; id[n]; n++) {
        char c = id[n];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok || n >= HTTP_REQ_ID_MAX)
            return false;
    }
    return n > 0;
}

static void new_request_id(char *out)
{
    unsigned char raw[12];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        memset(raw, 0, sizeof raw);
    for (size_t i = 0; i < sizeof raw; i++)
        sprintf(out + 2 * i, "%02x", raw[i]);
}

int http_match(const char *pattern, const char *path, char *buf, size_t buflen, const char **params,
               size_t maxparams)
{
    size_t np = 0, used = 0;
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (*p != '/' || *s != '/')
            return -ENOENT;
        p++, s++;
        size_t plen = strcspn(p, "/"), slen = strcspn(s, "/");
        if (plen > 1 && p[0] == '{' && p[plen - 1] == '}') {
            if (slen == 0 || np >= maxparams || used + slen + 1 > buflen)
                return -ENOENT;
            memcpy(buf + used, s, slen);
            buf[used + slen] = '\0';
            params[np++] = buf + used;
            used += slen + 1;
        } else if (plen != slen || memcmp(p, s, plen) != 0) {
            return -ENOENT;
        }
        p += plen, s += slen;
    }
    return (*p == '\0' && *s == '\0') ? (int)np : -ENOENT;
}

void http_json(http_res *res, int status, json_t *body)
{
    json_decref(res->json);
    res->status = status;
    res->json = body;
}

void http_res_clear(http_res *res)
{
    json_decref(res->json);
    free(res->raw);
    *res = (http_res){0};
}

void http_add_header(http_res *res, const char *name, const char *value)
{
    if (res->nheaders == HTTP_MAX_HEADERS)
        return;
    res->headers[res->nheaders].name = name;
    snprintf(res->headers[res->nheaders].value, sizeof res->headers[0].value, "%s", value);
    res->nheaders++;
}

void http_tag(http_res *res, const char *key, const char *value)
{
    res->tag.key = key;
    snprintf(res->tag.value, sizeof res->tag.value, "%s", value);
}

void http_error(http_res *res, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* The message may echo a client's bytes (a path, a query value), or be
     * cut inside a character: JSON wants UTF-8. */
    valid_utf8_repair(msg);
    http_json(res, status, json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg));
}

int http_body_unpack(http_req *req, http_res *res, const char *fmt, ...)
{
    json_error_t err;
    if (req->body_len == 0) {
        http_error(res, 400, "missing_body", "the request needs a JSON object body");
        return -EINVAL;
    }
    json_t *root = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &err);
    if (!root) {
        http_error(res, 400, "invalid_json", "body is not valid JSON: %s (line %d, column %d)",
                   err.text, err.line, err.column);
        return -EINVAL;
    }
    json_decref(req->json);
    req->json = root;
    if (!json_is_object(root)) {
        http_error(res, 400, "invalid_body", "body must be a JSON object");
        return -EINVAL;
    }
    /* JSON Schema's `integer` is any number without a fractional part, so
     * 25.0 is one (the OpenAPI documents say `integer`): such numbers
     * become integers before the shape check, when they are exactly
     * representable (|v| <= 2^53). 25.5 stays a real and is refused. */
    const char *name;
    json_t *value;
    json_object_foreach(root, name, value)
    {
        double v = json_is_real(value) ? json_real_value(value) : 0.5;
        if (v >= -9007199254740992.0 && v <= 9007199254740992.0 && v == floor(v))
            json_object_set_new(root, name, json_integer((json_int_t)v));
    }
    va_list ap;
    va_start(ap, fmt);
    int rc = json_vunpack_ex(root, &err, JSON_STRICT, fmt, ap);
    va_end(ap);
    if (rc == 0)
        return 0;
    const char *code = "invalid_body";
    switch (json_error_code(&err)) {
    case json_error_item_not_found:
        code = "missing_field";
        break;
    case json_error_wrong_type:
        code = "invalid_type";
        break;
    case json_error_end_of_input_expected:
        code = "unknown_field";
        break;
    default:
        break;
    }
    http_error(res, 400, code, "%s", err.text);
    return -EINVAL;
}

const char *http_query(const http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_header(const http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_peer(const http_req *req, char *out, size_t len)
{
    out[0] = '\0';
    const union MHD_ConnectionInfo *ci =
        req->conn ? MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS) : NULL;
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
                  (socklen_t)len);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                  (socklen_t)len);
    return out;
}

/* ---- built-in routes ---- */

static void handle_healthz(http_req *req, http_res *res)
{
    (void)req;
    http_json(res, 200, json_pack("{s:s}", "status", "ok"));
}

static void handle_readyz(http_server *srv, http_res *res)
{
    json_t *checks = json_object();
    bool ok = srv->hooks.ready ? srv->hooks.ready(srv->app, checks) : true;
    http_json(res, ok ? 200 : 503,
              json_pack("{s:s, s:o}", "status", ok ? "ready" : "not_ready", "checks", checks));
}

static const char *route_name(const http_server *srv, size_t i)
{
    return i < srv->nroutes ? srv->routes[i].pattern : builtin_names[i - srv->nroutes];
}

static void handle_metrics(http_server *srv, http_res *res)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (!out) {
        http_error(res, 500, "internal", "out of memory");
        return;
    }
    metrics_header(out, "http_request_duration_seconds", "histogram",
                   "HTTP requests by route and status: count and latency");
    for (size_t r = 0; r < srv->nroutes + NBUILTIN; r++) {
        for (size_t s = 0; s < NSTATUS; s++) {
            const metrics_histogram *h = &srv->latency[r * NSTATUS + s];
            if (atomic_load_explicit(&h->count, memory_order_relaxed) == 0)
                continue;
            char labels[256], status[8];
            snprintf(status, sizeof status, "%d", tracked_statuses[s]);
            snprintf(labels, sizeof labels, "method=\"%s\",route=\"%s\",status=\"%s\"",
                     r < srv->nroutes ? srv->routes[r].method : "GET", route_name(srv, r),
                     tracked_statuses[s] ? status : "other");
            metrics_histogram_write(out, "http_request_duration_seconds", labels, h);
        }
    }
    tracer_metrics(srv->traces, out);
    if (srv->hooks.metrics)
        srv->hooks.metrics(srv->app, out);
    fclose(out);
    res->status = 200;
    res->raw = text;
    res->raw_len = len;
    res->content_type = "text/plain; version=0.0.4";
}

/* ---- dispatch ---- */

static void dispatch(req_ctx *ctx, http_res *res)
{
    http_server *srv = ctx->srv;
    http_req *req = &ctx->req;

    bool get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
    for (int b = 0; b < BUILTIN_UNMATCHED; b++) {
        if (strcmp(req->path, builtin_names[b]) != 0)
            continue;
        ctx->route = (int)srv->nroutes + b;
        if (!get) {
            snprintf(res->allow, sizeof res->allow, "GET, HEAD");
            http_error(res, 405, "method_not_allowed", "%s is not allowed on %s; allowed: GET",
                       req->method, req->path);
            return;
        }
        if (b == BUILTIN_HEALTHZ)
            handle_healthz(req, res);
        else if (b == BUILTIN_READYZ)
            handle_readyz(srv, res);
        else
            handle_metrics(srv, res);
        return;
    }

    size_t allow_len = 0;
    for (size_t i = 0; i < srv->nroutes; i++) {
        const http_route *r = &srv->routes[i];
        int n = http_match(r->pattern, req->path, ctx->params_buf, sizeof ctx->params_buf,
                           req->params, HTTP_MAX_PARAMS);
        if (n < 0)
            continue;
        /* HEAD is GET without the body, which MHD leaves out itself. */
        bool same = strcmp(r->method, req->method) == 0 ||
                    (strcmp(req->method, "HEAD") == 0 && strcmp(r->method, "GET") == 0);
        if (!same) {
            int w = snprintf(res->allow + allow_len, sizeof res->allow - allow_len, "%s%s",
                             allow_len ? ", " : "", r->method);
            if (w > 0 && (size_t)w < sizeof res->allow - allow_len)
                allow_len += (size_t)w;
            ctx->route = (int)i;
            continue;
        }
        ctx->route = (int)i;
        req->nparams = (size_t)n;
        req->ctx = r->ctx;
        snprintf(ctx->span.name, sizeof ctx->span.name, "%s %s", req->method, r->pattern);
        trace_log_context(&req->trace);
        r->handler(req, res);
        trace_log_context(NULL);
        if (res->status == 0 && !ctx->suspended) /* a handler that forgot to answer */
            http_error(res, 500, "internal", "no response");
        return;
    }
    if (allow_len)
        http_error(res, 405, "method_not_allowed", "%s is not allowed on %s; allowed: %s",
                   req->method, req->path, res->allow);
    else
        http_error(res, 404, "not_found", "no route for %s %s", req->method, req->path);
}

static enum MHD_Result send_response(struct MHD_Connection *conn, req_ctx *ctx, http_res *res)
{
    struct MHD_Response *r;
    if (res->upgrade) {
        r = MHD_create_response_for_upgrade((MHD_UpgradeHandler)res->upgrade, res->upgrade_cls);
    } else if (res->fd > 0) {
        r = MHD_create_response_from_fd(res->fd_size, res->fd); /* MHD closes it */
        res->fd = 0;
    } else if (res->raw) {
        r = MHD_create_response_from_buffer(res->raw_len, res->raw, MHD_RESPMEM_MUST_FREE);
        res->raw = NULL;
    } else if (res->status == 204 && !res->json) { /* No Content */
        r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    } else {
        char *text = res->json ? json_dumps(res->json, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        if (!text) {
            res->status = 500;
            text = strdup("{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}");
        }
        size_t len = text ? strlen(text) : 0;
        r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    }
    json_decref(res->json);
    res->json = NULL;
    if (!r)
        return MHD_NO;
    if (!res->upgrade && res->status != 204)
        MHD_add_response_header(r, "Content-Type",
                                res->content_type ? res->content_type : "application/json");
    MHD_add_response_header(r, "X-Request-Id", ctx->req_id);
    if (res->status == 405 && res->allow[0])
        MHD_add_response_header(r, "Allow", res->allow);
    for (size_t i = 0; i < res->nheaders; i++)
        MHD_add_response_header(r, res->headers[i].name, res->headers[i].value);
    ctx->status = res->status;
    if (res->tag.key)
        trace_tag(&ctx->span, res->tag.key, res->tag.value);
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)res->status, r);
    MHD_destroy_response(r);
    return ret;
}

static req_ctx *req_ctx_new(http_server *srv, struct MHD_Connection *conn, const char *url,
                            const char *method)
{
    req_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return NULL;
    clock_gettime(CLOCK_MONOTONIC, &ctx->start);
    ctx->srv = srv;
    ctx->route = (int)srv->nroutes + BUILTIN_UNMATCHED;
    ctx->req.method = method;
    ctx->req.path = url;
    ctx->req.app = srv->app;
    ctx->req.conn = conn;
    const char *given = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
    if (given && http_request_id_valid(given))
        snprintf(ctx->req_id, sizeof ctx->req_id, "%s", given);
    else
        new_request_id(ctx->req_id);
    ctx->req.req_id = ctx->req_id;
    /* The client's trace continues (the gateway always sends one); a
     * malformed traceparent starts a new one, as the recommendation asks. */
    trace_ctx parent;
    const char *tp = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, TRACE_HEADER);
    bool continued = tp && trace_parse(tp, &parent) == 0;
    trace_begin(srv->traces, &ctx->span, continued ? &parent : NULL, method, TRACE_SERVER);
    ctx->req.trace = ctx->span.ctx;
    return ctx;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    http_server *srv = cls;
    req_ctx *ctx = *con_cls;
    http_res res = {0};

    if (!ctx) {
        ctx = req_ctx_new(srv, conn, url, method);
        if (!ctx)
            return MHD_NO;
        *con_cls = ctx;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        unsigned long long length = cl ? strtoull(cl, NULL, 10) : 0;
        if (length > srv->max_body && length > DRAIN_MAX) {
            /* Far too large to read: refuse at once; MHD closes the
             * connection, and a client still sending may see a reset.
             * Anything smaller is read and dropped, then refused (below),
             * so the client reads the 413 and keeps its connection. */
            http_error(&res, 413, "body_too_large", "request body exceeds %zu bytes",
                       srv->max_body);
            return send_response(conn, ctx, &res);
        }
        /* Answer on a later call, never this first one: queueing a response
         * before MHD has seen the whole request turns keep-alive off. */
        return MHD_YES;
    }

    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (ctx->too_large)
            return MHD_YES;
        if (ctx->req.body_len + n > srv->max_body) {
            ctx->too_large = true;
            return MHD_YES;
        }
        if (ctx->req.body_len + n > ctx->cap) {
            size_t cap = ctx->cap ? ctx->cap * 2 : 1024;
            while (cap < ctx->req.body_len + n)
                cap *= 2;
            char *grown = realloc(ctx->buf, cap);
            if (!grown)
                return MHD_NO;
            ctx->buf = grown;
            ctx->cap = cap;
        }
        memcpy(ctx->buf + ctx->req.body_len, upload_data, n);
        ctx->req.body_len += n;
        ctx->req.body = ctx->buf;
        return MHD_YES;
    }

    if (ctx->status) /* already answered (413 on the first call) */
        return MHD_YES;
    if (ctx->suspended) /* called again after http_resume */
        return send_response(conn, ctx, &ctx->answer);
    if (ctx->too_large)
        http_error(&res, 413, "body_too_large", "request body exceeds %zu bytes", srv->max_body);
    else
        dispatch(ctx, &res);
    if (ctx->suspended)
        return MHD_YES; /* answered by http_resume */
    return send_response(conn, ctx, &res);
}

http_pending *http_suspend(http_req *req)
{
    req_ctx *ctx = (req_ctx *)req;
    ctx->suspended = true;
    MHD_suspend_connection(req->conn);
    return (http_pending *)ctx;
}

void http_resume(http_pending *pending, http_res *res)
{
    req_ctx *ctx = (req_ctx *)pending;
    /* MHD's resume takes a lock the connection's thread takes before it
     * calls on_request again: the answer written here is seen there. */
    ctx->answer = *res;
    *res = (http_res){0};
    MHD_resume_connection(ctx->req.conn);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)toe;
    http_server *srv = cls;
    req_ctx *ctx = *con_cls;
    if (!ctx)
        return;
    double secs = elapsed_s(&ctx->start);
    if (ctx->span.ctx.sampled) {
        trace_span *sp = &ctx->span;
        trace_tag(sp, "http.request.method", ctx->req.method);
        trace_tag(sp, "url.path", ctx->req.path);
        if (ctx->route < (int)srv->nroutes)
            trace_tag(sp, "http.route", srv->routes[ctx->route].pattern);
        trace_tag_int(sp, "http.response.status_code", ctx->status);
        trace_tag(sp, "shop.request_id", ctx->req_id);
        if (ctx->status >= 500 || !ctx->status)
            trace_tag(sp, "error", ctx->status ? "server error" : "no answer");
    }
    trace_end(srv->traces, &ctx->span);
    if (ctx->status) {
        metrics_histogram_observe(
            &srv->latency[(size_t)ctx->route * NSTATUS + status_slot(ctx->status)], secs);
        /* Failures always, with the gateway's request id; every other
         * request at debug. The gateway's access log already has each one
         * (method, path, status, time, the service's time, the same id),
         * and a second line per request here was a measurable share of
         * the cost of a read (bench/README.md). */
        log_level level = ctx->status >= 500 ? LOG_WARN : LOG_DEBUG;
        if (log_enabled(level)) {
            trace_log_context(&ctx->req.trace);
            log_fields(level, ctx->req_id,
                       json_pack("{s:s, s:s, s:i, s:f}", "method", ctx->req.method, "path",
                                 ctx->req.path, "status", ctx->status, "ms",
                                 round(secs * 1e6) / 1e3),
                       "request");
            trace_log_context(NULL);
        }
    }
    json_decref(ctx->req.json);
    http_res_clear(&ctx->answer); /* an answer never sent */
    free(ctx->buf);
    free(ctx);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    log_msg(LOG_WARN, NULL, "microhttpd: %s", msg);
}

http_server *http_start(const http_config *cfg, const http_route *routes, size_t nroutes,
                        const http_hooks *hooks, void *app)
{
    http_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    srv->routes = routes;
    srv->nroutes = nroutes;
    srv->hooks = hooks ? *hooks : (http_hooks){0};
    srv->app = app;
    srv->max_body = cfg->max_body;
    srv->traces = cfg->traces;
    srv->latency = calloc((nroutes + NBUILTIN) * NSTATUS, sizeof *srv->latency);
    if (!srv->latency)
        goto fail;

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cfg->port)};
    if (inet_pton(AF_INET, cfg->host, &addr.sin_addr) != 1) {
        log_msg(LOG_ERROR, NULL, "HTTP_HOST %s is not an IPv4 address", cfg->host);
        goto fail;
    }
    srv->daemon = MHD_start_daemon(
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_ALLOW_UPGRADE |
            MHD_ALLOW_SUSPEND_RESUME,
        (uint16_t)cfg->port, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
        NULL, MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)cfg->threads,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)cfg->timeout_s, MHD_OPTION_END);
    /* No MHD_OPTION_LISTENING_ADDRESS_REUSE: it sets SO_REUSEPORT, and a
     * second (stale) instance would then share the port and split the
     * traffic. libmicrohttpd's default, SO_REUSEADDR, still allows a
     * restart while old connections sit in TIME_WAIT. */
    if (!srv->daemon) {
        log_msg(LOG_ERROR, NULL, "cannot listen on %s:%d (is another process on that port?)",
                cfg->host, cfg->port);
        goto fail;
    }
    return srv;
fail:
    free(srv->latency);
    free(srv);
    return NULL;
}

void http_stop(http_server *srv)
{
    if (!srv)
        return;
    MHD_stop_daemon(srv->daemon);
    free(srv->latency);
    free(srv);
}

static const cfg_setting http_settings_list[] = {
    CFG_S("HTTP_HOST", http_settings, host, "127.0.0.1", "address to listen on"),
    CFG_I_DYN("HTTP_THREADS", http_settings, threads, 1, 256, "2 per core, at least 4",
              "HTTP worker threads (deposits and listings wait on the database in them; orders "
              "and reads by key wait suspended for their group, holding no thread)"),
    CFG_I("HTTP_MAX_BODY", http_settings, max_body, 64, 1 << 24, 16384,
          "largest request body in bytes (larger: 413)"),
    CFG_I("HTTP_IDLE_TIMEOUT_S", http_settings, idle_timeout_s, 1, 3600, 60,
          "idle keep-alive connections close after this"),
};
const cfg_table http_settings_table = CFG_TABLE("http", http_settings_list);

http_config http_config_of(const http_settings *s, int port)
{
    /* Two per core (at least 4): reads and deposits wait on the database
     * in these threads, orders do not (they wait suspended for their group
     * commit). More threads than that only take turns on the cores
     * (bench/README.md has the measurement). */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int64_t threads = s->threads ? s->threads : cores > 2 ? 2 * cores : 4;
    return (http_config){.host = s->host,
                         .port = port,
                         .threads = (int)threads,
                         .max_body = (size_t)s->max_body,
                         .timeout_s = (int)s->idle_timeout_s};
}
