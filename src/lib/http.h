/* HTTP layer on libmicrohttpd: an epoll thread pool, a small router with
 * {param} path segments, JSON bodies through jansson with strict shape
 * checks, a body size limit, request ids, the error format of docs/architecture.md ("Conventions"),
 * and the built-in /healthz, /readyz and /metrics routes. */
#ifndef SHOP_HTTP_H
#define SHOP_HTTP_H

#include "lib/config.h"
#include "lib/trace.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define HTTP_MAX_PARAMS 4
#define HTTP_REQ_ID_MAX 64

struct MHD_Connection;
struct MHD_UpgradeResponseHandle;

/* What a handler sees. Every pointer is borrowed until the handler returns. */
typedef struct http_req {
    const char *method;
    const char *path;
    const char *req_id;
    const char *params[HTTP_MAX_PARAMS]; /* {param} segments, in order */
    size_t nparams;
    const char *body; /* not NUL-terminated; NULL when empty */
    size_t body_len;
    void *app;       /* the service's context given to http_start */
    const void *ctx; /* the route's own context (http_route.ctx) */
    struct MHD_Connection *conn;
    json_t *json;    /* the parsed body, after http_body_unpack */
    trace_ctx trace; /* the request's server span: what work done for it
                      * continues (its client's traceparent, or a new trace) */
} http_req;

#define HTTP_MAX_HEADERS 4

/* Takes over an upgraded connection (WebSocket): see MHD_UpgradeHandler. */
typedef void (*http_upgrade_fn)(void *cls, struct MHD_Connection *conn, void *con_cls,
                                const char *extra_in, size_t extra_in_size, int sock,
                                struct MHD_UpgradeResponseHandle *urh);

/* What a handler fills in: a JSON body (owned), raw bytes (owned), an open
 * file (owned), or an upgrade. */
typedef struct http_res {
    int status;
    json_t *json;
    char *raw;
    size_t raw_len;
    int fd; /* > 0: send this file, fd_size bytes */
    size_t fd_size;
    const char *content_type; /* static string; JSON when NULL */
    char allow[64];           /* Allow header of a 405 */
    struct {
        const char *name; /* static string */
        char value[1024]; /* a Set-Cookie carries a token */
    } headers[HTTP_MAX_HEADERS];
    size_t nheaders;
    http_upgrade_fn upgrade; /* with status 101 */
    void *upgrade_cls;
    /* One tag for the request's spans (http_tag): what it is about. */
    struct {
        const char *key; /* static string; NULL: none */
        char value[64];
    } tag;
} http_res;

/* Tags the request's server span (and a group's spans for it) with what
 * the request is about, e.g. key "shop.order_id" and the order's id. */
void http_tag(http_res *res, const char *key, const char *value);

typedef void (*http_handler)(http_req *req, http_res *res);

typedef struct http_route {
    const char *method;
    const char *pattern; /* "/accounts/{user_id}/deposits" */
    http_handler handler;
    const void *ctx; /* given to the handler as req->ctx; may be NULL */
} http_route;

typedef struct http_hooks {
    /* /readyz: fills `checks` with {"name": "ok" | "reason"}; returns true
     * when every dependency is reachable. NULL: always ready. */
    bool (*ready)(void *app, json_t *checks);
    /* /metrics: appends the service's own series after the HTTP ones. */
    void (*metrics)(void *app, FILE *out);
} http_hooks;

typedef struct http_config {
    const char *host; /* address to listen on, e.g. "127.0.0.1" */
    int port;
    int threads;
    size_t max_body;
    int timeout_s;  /* idle keep-alive connections are closed after this */
    tracer *traces; /* a server span per request (NULL: none); borrowed */
} http_config;

/* The HTTP settings every service reads (its port is its own). */
typedef struct http_settings {
    const char *host;
    int64_t threads; /* 0: two per core, at least 4 */
    int64_t max_body, idle_timeout_s;
} http_settings;
extern const cfg_table http_settings_table;

/* The configuration `s` and `port` give (threads worked out when 0). */
http_config http_config_of(const http_settings *s, int port);

typedef struct http_server http_server;

/* Starts serving. `routes` and `app` are borrowed for the server's life.
 * Returns NULL (and logs why) when the port cannot be bound. */
http_server *http_start(const http_config *cfg, const http_route *routes, size_t nroutes,
                        const http_hooks *hooks, void *app);

/* Stops accepting, finishes running handlers, frees the server. NULL-safe. */
void http_stop(http_server *srv);

/* ---- answering later ----
 * A handler whose answer another thread computes (a group commit) calls
 * http_suspend and returns without answering: the connection then waits
 * without holding an HTTP thread, until http_resume gives its answer. */
typedef struct http_pending http_pending;

/* Suspends the request being handled. Call it from its handler, at most
 * once; the request's own data (req, its body, its headers) is gone once
 * the handler returns, so copy what the answer needs first. */
http_pending *http_suspend(http_req *req);

/* Answers a suspended request with `res`, whose contents it takes over;
 * from any thread, exactly once. Every suspended request must be answered
 * before http_stop. */
void http_resume(http_pending *pending, http_res *res);

/* Frees what `res` owns (its JSON, its raw bytes) and empties it. */
void http_res_clear(http_res *res);

/* Answers with `body` (stolen). */
void http_json(http_res *res, int status, json_t *body);

/* Answers {"error": {"code": code, "message": ...}}. */
void http_error(http_res *res, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Adds a response header; `name` is borrowed (a static string). */
void http_add_header(http_res *res, const char *name, const char *value);

/* Parses the body as a JSON object and unpacks it with json_unpack's `fmt`
 * in strict mode (no unknown members). Unpacked strings are borrowed from
 * req->json until the request ends. Returns 0, or -EINVAL after filling
 * `res` with a 400 naming what is wrong. */
int http_body_unpack(http_req *req, http_res *res, const char *fmt, ...);

/* A query-string argument or a request header; NULL when absent. */
const char *http_query(const http_req *req, const char *name);
const char *http_header(const http_req *req, const char *name);

/* The address of the connection's peer as text (IPv4 or IPv6) into out,
 * "" when unknown; returns out. */
const char *http_peer(const http_req *req, char *out, size_t len);

/* Matches a path against a route pattern. Pure. On a match, copies each
 * {param} segment into `buf` (NUL-terminated) and points params[] at them.
 * Returns the number of params, or -ENOENT when the path does not match or
 * `buf` / `params` are too small. */
int http_match(const char *pattern, const char *path, char *buf, size_t buflen, const char **params,
               size_t maxparams);

/* True if `id` is acceptable as a client-supplied X-Request-Id:
 * 1..64 characters of [A-Za-z0-9._:-]. Pure. */
bool http_request_id_valid(const char *id);

#endif
