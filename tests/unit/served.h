/* A server of our own HTTP layer in the test process, on a free loopback
 * port, and a client for it (libcurl): for the modules whose logic runs
 * around a real request (a suspended connection, a header), with no other
 * server. */
#ifndef SHOP_TEST_SERVED_H
#define SHOP_TEST_SERVED_H

#include "lib/http.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Starts `routes` with `app` on a free port, into *port, with a server
 * span per request for `traces` (NULL: none); NULL on failure. */
static inline http_server *served_start_traced(const http_route *routes, size_t n, void *app,
                                               tracer *traces, int *port)
{
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (probe < 0 || bind(probe, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(probe, (struct sockaddr *)&a, &len) < 0)
        return NULL;
    close(probe);
    http_config cfg = {.host = "127.0.0.1",
                       .port = ntohs(a.sin_port),
                       .threads = 4,
                       .max_body = 1 << 20,
                       .timeout_s = 5,
                       .traces = traces};
    *port = cfg.port;
    return http_start(&cfg, routes, n, NULL, app);
}

static inline http_server *served_start(const http_route *routes, size_t n, void *app, int *port)
{
    return served_start_traced(routes, n, app, NULL, port);
}

/* One request's answer: its status (0: no answer) and body. */
typedef struct served_answer {
    long status;
    char body[512];
} served_answer;

static inline size_t served_keep(char *data, size_t size, size_t n, void *arg)
{
    served_answer *a = arg;
    size_t have = strlen(a->body), room = sizeof a->body - 1 - have, len = size * n;
    memcpy(a->body + have, data, len < room ? len : room);
    a->body[have + (len < room ? len : room)] = '\0';
    return size * n;
}

/* A curl handle for `method path` on `port` with `header` (NULL: none),
 * answering into `a`; the caller runs it (alone or in a multi) and cleans
 * up `headers`. */
static inline CURL *served_handle(int port, const char *method, const char *path,
                                  const char *header, struct curl_slist **headers, served_answer *a)
{
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    CURL *h = curl_easy_init();
    *headers = header ? curl_slist_append(NULL, header) : NULL;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, *headers);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, served_keep);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_PRIVATE, a);
    return h;
}

/* One request, answered into `a`. */
static inline void served_request(int port, const char *method, const char *path,
                                  const char *header, served_answer *a)
{
    struct curl_slist *headers;
    *a = (served_answer){0};
    CURL *h = served_handle(port, method, path, header, &headers, a);
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &a->status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
}

/* n requests at once (one curl multi), each answered into a[i]. */
static inline void served_many(int port, const char *method, const char *path, int n,
                               served_answer *a)
{
    CURLM *m = curl_multi_init();
    CURL **h = calloc((size_t)n, sizeof *h);
    struct curl_slist **headers = calloc((size_t)n, sizeof *headers);
    for (int i = 0; i < n; i++) {
        a[i] = (served_answer){0};
        h[i] = served_handle(port, method, path, NULL, &headers[i], &a[i]);
        curl_multi_add_handle(m, h[i]);
    }
    for (int running = 1; running;) {
        curl_multi_perform(m, &running);
        if (running)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    for (int i = 0; i < n; i++) {
        curl_easy_getinfo(h[i], CURLINFO_RESPONSE_CODE, &a[i].status);
        curl_multi_remove_handle(m, h[i]);
        curl_easy_cleanup(h[i]);
        curl_slist_free_all(headers[i]);
    }
    free(h);
    free(headers);
    curl_multi_cleanup(m);
}

/* A collector: keeps the spans it is sent. */
typedef struct collector {
    pthread_mutex_t lock;
    json_t *spans;
} collector;

static inline void collect(http_req *req, http_res *res)
{
    collector *c = req->app;
    json_t *batch = json_loadb(req->body ? req->body : "", req->body_len, 0, NULL);
    pthread_mutex_lock(&c->lock);
    if (json_is_array(batch))
        json_array_extend(c->spans, batch);
    pthread_mutex_unlock(&c->lock);
    json_decref(batch);
    http_json(res, 202, json_object()); /* Zipkin's answer: 202 Accepted */
}

static inline size_t collected(collector *c)
{
    pthread_mutex_lock(&c->lock);
    size_t n = json_array_size(c->spans);
    pthread_mutex_unlock(&c->lock);
    return n;
}

/* A collector of the test's own, and a tracer for "orders" that sends it
 * every span (within 20 ms): returns the collector's server, or NULL. */
static inline http_server *collecting(collector *c, tracer **t)
{
    static const http_route routes[] = {{"POST", "/api/v2/spans", collect, NULL}};
    pthread_mutex_init(&c->lock, NULL);
    c->spans = json_array();
    int port;
    http_server *srv = served_start(routes, 1, c, &port);
    if (!srv)
        return NULL;
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d/api/v2/spans", port);
    trace_settings s = {.disabled = "false",
                        .exporter = "zipkin",
                        .endpoint = endpoint,
                        .service = "",
                        .sampler = "parentbased_always_on",
                        .ratio = "",
                        .timeout_ms = 2000,
                        .queue = 1024,
                        .batch = 16,
                        .delay_ms = 20};
    if (tracer_start(&s, "orders", t) != 0)
        return NULL;
    return srv;
}

#endif
