/* Shop's end-to-end load generator. It creates users with accounts and
 * deposits, follows each user's orders on a WebSocket through the gateway,
 * and places orders OPEN-LOOP: order i is due at start + i/rate and its
 * latency counts from that due time, so a stalled system cannot hide its
 * queue behind a slow client. Latency ends when the order's final status
 * (FINISHED or CANCELLED) arrives on the WebSocket.
 *
 * Phase 1: a fixed rate (default 1,000/s) -> p50, p99, p99.9 and a
 *          per-second timeline.
 * Phase 2: rates stepped up until the rate of final statuses stops
 *          following the offered rate -> the highest sustained rate.
 *
 * One thread: libcurl's multi socket interface for the POSTs (keep-alive
 * connections), libwslay for WebSocket framing, and one epoll set for both,
 * so each turn of the loop touches only the sockets that are ready (the
 * client shares the machine with the stack it measures: its CPU is theirs).
 * Prints one JSON object on stdout.
 *
 * usage: loadgen GATEWAY_URL RUN_ID USERS FIXED_RATE FIXED_SECONDS
 *                "STEP_RATES" STEP_SECONDS [WARMUP_SECONDS]
 *
 * With LOADGEN_MARK=PATH, PATH.start and PATH.end are created when the
 * measured part of the fixed rate starts and ends (for a profiler).
 *
 * With LOADGEN_ORDERS=PATH, the measured orders are written to PATH with
 * their times (write_orders).
 *
 * With LOADGEN_SEGMENT=N in the environment, the fixed phase is also
 * reported N orders at a time ("segments": finals a second, p50, p99): the
 * long run of `make bench` with BENCH_ORDERS.
 *
 * The fixed rate runs WARMUP_SECONDS (default 0) longer, at the start, and
 * those orders are left out of the latency figures (they are placed and
 * checked like all others): a step from idle to 1,000/s costs the stack a
 * second or two of small batches and cold connections, which is start-up,
 * not the steady state the figures describe. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <search.h>
#include <sys/epoll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>
#include <wslay/wslay.h>

#define MAX_INFLIGHT 256
#define MAX_CONNECTIONS 64

typedef struct order_rec {
    char id[40];
    double due;      /* scheduled send time */
    double final_at; /* 0 until the WebSocket says FINISHED or CANCELLED */
    double answered; /* when the POST's answer arrived */
    int status;      /* 0 pending, 201 accepted, else the error status */
    int phase, step;
    int user;
    int amount;
    bool cancelled;
} order_rec;

/* A final status that arrived before its POST's answer. */
typedef struct early_final {
    double at;
    bool cancelled;
} early_final;

typedef struct ws_client {
    int fd;
    wslay_event_context_ptr ctx;
} ws_client;

typedef struct request {
    CURL *easy;
    size_t order;   /* index into orders */
    int signing_in; /* >= 0: a token refresh for this user, not an order */
    char *body;
    size_t len;
    FILE *out;
    char payload[160];
} request;

/* Everything the loop touches: one per process. */
typedef struct loadgen {
    const char *gateway;
    char orders_url[256], sessions_url[256];
    char host[64];
    int port;
    const char *run;
    int users;
    CURLM *multi;
    struct curl_slist *headers;       /* no token: sign-up and sign-in */
    struct curl_slist **user_headers; /* per user: JSON and their token */
    char **tokens;
    double *signed_in_at; /* when each user's token was issued */
    bool *refreshing;
    int next_refresh; /* the user whose token is looked at next */
    double refresh_s; /* tokens older than this are renewed (LOADGEN_TOKEN_REFRESH_S) */
    request *free_reqs[MAX_INFLIGHT];
    int nfree;
    order_rec *orders;
    size_t norders, cap;
    struct hsearch_data ids;   /* order id -> index + 1 */
    struct hsearch_data early; /* final statuses seen before the POST answered */
    ws_client *ws;
    int epfd;
    double curl_due; /* when libcurl wants its timeout handled; 0 = never */
    int running;     /* transfers libcurl has in progress */
    unsigned seed;
    size_t finals;
    /* LOADGEN_MARK=PATH: PATH.start is created when the measured part of
     * the fixed rate begins (its first order sent), PATH.end when its last
     * order is sent; `make bench` profiles the stack between the two. */
    const char *mark;
    size_t mark_start, mark_end; /* order indexes; 0 = none */
} loadgen;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

__attribute__((noreturn)) static void die(const char *what)
{
    fprintf(stderr, "loadgen: %s\n", what);
    exit(2);
}

/* ---- finals from the WebSocket ---- */

static void record_final(loadgen *g, const char *id, bool cancelled, double at)
{
    ENTRY q = {.key = (char *)id}, *hit = NULL;
    if (hsearch_r(q, FIND, &hit, &g->ids) && hit) {
        order_rec *o = &g->orders[(size_t)hit->data - 1];
        if (o->final_at == 0) {
            o->final_at = at;
            o->cancelled = cancelled;
            g->finals++;
        }
        return;
    }
    /* Faster than the POST's answer: keep it for when the id is known. */
    early_final *f = malloc(sizeof *f);
    *f = (early_final){.at = at, .cancelled = cancelled};
    ENTRY e = {.key = strdup(id), .data = f};
    hsearch_r(e, ENTER, &hit, &g->early);
}

static void on_ws_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *user)
{
    (void)ctx;
    loadgen *g = user;
    if (arg->opcode != WSLAY_TEXT_FRAME)
        return;
    json_t *j = json_loadb((const char *)arg->msg, arg->msg_length, 0, NULL);
    const char *id = NULL, *status = NULL;
    if (j && json_unpack(j, "{s:{s:s, s:s}}", "order", "id", &id, "status", &status) == 0 &&
        strcmp(status, "NEW") != 0)
        record_final(g, id, strcmp(status, "CANCELLED") == 0, now_s());
    json_decref(j);
}

typedef struct ws_ctx {
    loadgen *g;
    int fd;
} ws_ctx;

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *u)
{
    (void)flags;
    ws_ctx *w = u;
    ssize_t n = recv(w->fd, buf, len, 0);
    if (n > 0)
        return n;
    wslay_event_set_error(ctx, n < 0 && errno == EAGAIN ? WSLAY_ERR_WOULDBLOCK
                                                        : WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *d, size_t len, int flags,
                       void *u)
{
    (void)flags;
    ws_ctx *w = u;
    ssize_t n = send(w->fd, d, len, MSG_NOSIGNAL);
    if (n >= 0)
        return n;
    wslay_event_set_error(ctx, errno == EAGAIN ? WSLAY_ERR_WOULDBLOCK : WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

static int ws_mask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *u)
{
    (void)ctx, (void)u;
    return getrandom(buf, len, 0) == (ssize_t)len ? 0 : -1;
}

static void ws_msg_trampoline(wslay_event_context_ptr ctx,
                              const struct wslay_event_on_msg_recv_arg *arg, void *u)
{
    on_ws_msg(ctx, arg, ((ws_ctx *)u)->g);
}

/* Connects and upgrades; the handshake is blocking (set-up time only). */
static void ws_open(loadgen *g, int user, ws_client *c)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g->port)};
    inet_pton(AF_INET, g->host, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        die("cannot connect the WebSocket");
    char req[2600];
    int n =
        snprintf(req, sizeof req,
                 "GET /api/ws HTTP/1.1\r\nHost: %s:%d\r\n"
                 "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer %s\r\n\r\n",
                 g->host, g->port, g->tokens[user]);
    if (send(fd, req, (size_t)n, 0) != n)
        die("cannot send the WebSocket handshake");
    char resp[1024] = "";
    size_t got = 0;
    while (got < sizeof resp - 1 && !strstr(resp, "\r\n\r\n")) {
        ssize_t r = recv(fd, resp + got, 1, 0); /* byte by byte: no frame is read early */
        if (r <= 0)
            die("the WebSocket handshake was cut");
        got += (size_t)r;
        resp[got] = '\0';
    }
    if (strncmp(resp, "HTTP/1.1 101", 12) != 0)
        die("the WebSocket upgrade was refused");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    static const struct wslay_event_callbacks cb = {.recv_callback = ws_recv,
                                                    .send_callback = ws_send,
                                                    .genmask_callback = ws_mask,
                                                    .on_msg_recv_callback = ws_msg_trampoline};
    ws_ctx *w = malloc(sizeof *w);
    *w = (ws_ctx){g, fd};
    c->fd = fd;
    if (wslay_event_context_client_init(&c->ctx, &cb, w) != 0)
        die("wslay");
}

/* ---- POSTs through libcurl ---- */

static size_t collect(char *d, size_t s, size_t n, void *u)
{
    return fwrite(d, s, n, ((request *)u)->out);
}

/* One POST outside the measured part, as `user` (-1: no token); its
 * answer into `answer` (caller frees) when not NULL. */
static size_t sync_request(loadgen *g, int user, const char *path, const char *body, long *status,
                           char **answer)
{
    char url[256];
    snprintf(url, sizeof url, "%s%s", g->gateway, path);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, user < 0 ? g->headers : g->user_headers[user]);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    fclose(out);
    curl_easy_cleanup(c);
    if (answer)
        *answer = text;
    else
        free(text);
    return rc == CURLE_OK;
}

/* Keeps `token` for user u's requests (and their WebSocket, opened once). */
static void use_token(loadgen *g, int u, const char *token)
{
    free(g->tokens[u]);
    g->tokens[u] = strdup(token);
    char auth[2200];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    /* The old list is not freed: orders in flight still point at it, and
     * libcurl reads it only when it sends them, which may be later. Freed
     * here, its memory went to the new token and now and then an order
     * left with garbage for headers (415, no Content-Type: 3 in a
     * million-order run, one per round of refreshes). A list is ~1 kB per
     * user per refresh (every LOADGEN_TOKEN_REFRESH_S). */
    g->user_headers[u] =
        curl_slist_append(curl_slist_append(NULL, "Content-Type: application/json"), auth);
    g->signed_in_at[u] = now_s();
}

/* The body that signs user `u` up or in. */
static void credentials(const loadgen *g, int u, char *body, size_t size)
{
    snprintf(body, size, "{\"user_id\":\"bench-%s-%d\",\"password\":\"bench password %s\"}", g->run,
             u, g->run);
}

/* Keeps the token of a sign-in's answer for user u; false without one. */
static bool token_from(loadgen *g, int u, const char *answer)
{
    json_t *j = answer ? json_loads(answer, 0, NULL) : NULL;
    const char *token = json_string_value(json_object_get(j, "token"));
    if (token)
        use_token(g, u, token);
    json_decref(j);
    return token != NULL;
}

/* Signs user `u` up and in (Argon2id twice: outside the measured part) and
 * keeps the token for their requests and WebSocket. */
static void sign_in(loadgen *g, int u)
{
    char body[256], *answer = NULL;
    long status = 0;
    credentials(g, u, body, sizeof body);
    if (!sync_request(g, -1, "/api/users", body, &status, NULL) || (status != 201 && status != 409))
        die("cannot sign a user up");
    if (!sync_request(g, -1, "/api/sessions", body, &status, &answer) || status != 200)
        die("cannot sign a user in");
    if (!token_from(g, u, answer))
        die("no token in the sign-in's answer");
    free(answer);
}

/* A long run outlives the tokens (TOKEN_TTL_S, 15 minutes): as a real
 * client does, each user signs in again before theirs expires, through the
 * same event loop (a blocking sign-in would delay the orders due meanwhile
 * and count as their latency). One user looked at per turn of the loop. */
static void refresh_tokens(loadgen *g)
{
    int u = g->next_refresh;
    g->next_refresh = (u + 1) % g->users;
    if (g->refreshing[u] || g->nfree == 0 || now_s() - g->signed_in_at[u] < g->refresh_s)
        return;
    request *r = g->free_reqs[--g->nfree];
    r->signing_in = u;
    credentials(g, u, r->payload, sizeof r->payload);
    free(r->body);
    r->body = NULL;
    r->out = open_memstream(&r->body, &r->len);
    curl_easy_setopt(r->easy, CURLOPT_URL, g->sessions_url);
    curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, g->headers);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->payload);
    curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
    g->refreshing[u] = true;
    curl_multi_add_handle(g->multi, r->easy);
}

/* The answer of a token refresh. */
static void refreshed(loadgen *g, request *r, long status)
{
    int u = r->signing_in;
    if (status != 200 || !token_from(g, u, r->body))
        fprintf(stderr, "loadgen: signing user %d in again answered %ld\n", u, status);
    g->refreshing[u] = false;
    r->signing_in = -1;
    curl_easy_setopt(r->easy, CURLOPT_URL, g->orders_url);
}

static void start_order(loadgen *g, size_t i)
{
    order_rec *o = &g->orders[i];
    request *r = g->free_reqs[--g->nfree];
    r->order = i;
    snprintf(r->payload, sizeof r->payload,
             "{\"user_id\":\"bench-%s-%d\",\"amount\":%d,\"description\":\"bench\"}", g->run,
             o->user, o->amount);
    free(r->body);
    r->body = NULL;
    r->out = open_memstream(&r->body, &r->len);
    curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, g->user_headers[o->user]);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->payload);
    curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
    curl_multi_add_handle(g->multi, r->easy);
}

static void finish_requests(loadgen *g)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(g->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        request *r = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        long status = 0;
        curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
        curl_multi_remove_handle(g->multi, m->easy_handle);
        fclose(r->out);
        if (r->signing_in >= 0) {
            refreshed(g, r, m->data.result == CURLE_OK ? status : -1);
            g->free_reqs[g->nfree++] = r;
            continue;
        }
        order_rec *o = &g->orders[r->order];
        o->status = m->data.result == CURLE_OK ? (int)status : -1;
        o->answered = now_s();
        json_t *j = o->status == 201 ? json_loads(r->body, 0, NULL) : NULL;
        const char *id = j ? json_string_value(json_object_get(j, "id")) : NULL;
        if (id) {
            snprintf(o->id, sizeof o->id, "%s", id);
            ENTRY e = {.key = o->id, .data = (void *)(r->order + 1)}, *hit = NULL;
            hsearch_r(e, ENTER, &hit, &g->ids);
            ENTRY q = {.key = o->id};
            if (hsearch_r(q, FIND, &hit, &g->early) && hit && hit->data) {
                early_final *f = hit->data;
                o->final_at = f->at;
                o->cancelled = f->cancelled;
                g->finals++;
                free(f);
                hit->data = NULL;
            }
        } else if (o->status != 201) {
            fprintf(stderr, "loadgen: POST /orders answered %d: %s\n", o->status,
                    r->body ? r->body : "");
        }
        json_decref(j);
        g->free_reqs[g->nfree++] = r;
    }
}

/* WebSocket sockets are registered with this bit set in their epoll data
 * (and the user's index below it); libcurl's sockets, with their fd. */
#define WS_TAG (UINT64_C(1) << 62)

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *user, void *socketp)
{
    (void)easy, (void)socketp;
    loadgen *g = user;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(g->epfd, EPOLL_CTL_DEL, fd, NULL);
        return 0;
    }
    struct epoll_event ev = {.events = (what & CURL_POLL_IN ? EPOLLIN : 0) |
                                       (what & CURL_POLL_OUT ? EPOLLOUT : 0),
                             .data.u64 = (uint64_t)fd};
    if (epoll_ctl(g->epfd, EPOLL_CTL_MOD, fd, &ev) != 0 && errno == ENOENT)
        epoll_ctl(g->epfd, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

static int on_curl_timer(CURLM *multi, long ms, void *user)
{
    (void)multi;
    loadgen *g = user;
    g->curl_due = ms < 0 ? 0 : now_s() + (double)ms / 1000.0;
    return 0;
}

static void ws_ready(loadgen *g, int u)
{
    ws_client *c = &g->ws[u];
    if (c->fd < 0)
        return;
    if (wslay_event_recv(c->ctx) != 0 ||
        (wslay_event_want_write(c->ctx) && wslay_event_send(c->ctx) != 0)) {
        /* Lost: its user's finals will be missing, and the run says so. */
        fprintf(stderr, "loadgen: WebSocket of user %d closed\n", u);
        epoll_ctl(g->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
}

/* One turn of the loop: waits up to `wait` seconds for ready sockets or
 * libcurl's timeout, then serves them. The wait is in nanoseconds
 * (epoll_pwait2): at 1,000 orders/s the next order is due in under a
 * millisecond, which epoll_wait's milliseconds round to 0, and the load
 * generator spun on the CPU it shares with the system it measures (18 % of
 * the machine's samples at 1,000/s, perf). */
static void pump(loadgen *g, double wait)
{
    if (g->curl_due > 0 && g->curl_due - now_s() < wait)
        wait = g->curl_due - now_s();
    if (wait < 0)
        wait = 0;
    struct timespec ts = {.tv_sec = (time_t)wait,
                          .tv_nsec = (long)((wait - (double)(time_t)wait) * 1e9)};
    struct epoll_event ev[128];
    int n = epoll_pwait2(g->epfd, ev, 128, &ts, NULL);
    for (int i = 0; i < n; i++) {
        if (ev[i].data.u64 & WS_TAG) {
            ws_ready(g, (int)(ev[i].data.u64 & ~WS_TAG));
            continue;
        }
        int flags = (ev[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                    (ev[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                    (ev[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
        curl_multi_socket_action(g->multi, (curl_socket_t)ev[i].data.u64, flags, &g->running);
    }
    if (g->curl_due > 0 && now_s() >= g->curl_due) {
        g->curl_due = 0;
        curl_multi_socket_action(g->multi, CURL_SOCKET_TIMEOUT, 0, &g->running);
    }
    finish_requests(g);
    refresh_tokens(g);
}

/* Tops every user up with about 90% of what `orders` orders (spread over
 * all users, 10.5 on average) will ask, so that the end of each phase sees
 * some orders fail for lack of funds, as in real life. */
static void fund(loadgen *g, double orders)
{
    long each = (long)(orders / g->users * 10.5 * 0.9);
    for (int u = 0; each > 0 && u < g->users; u++) {
        char path[128], body[64];
        long status = 0;
        snprintf(path, sizeof path, "/api/accounts/bench-%s-%d/deposits", g->run, u);
        snprintf(body, sizeof body, "{\"amount\":%ld}", each);
        if (!sync_request(g, u, path, body, &status, NULL) || status != 201)
            die("cannot deposit");
    }
}

static void mark(const loadgen *g, const char *what)
{
    char path[4096];
    snprintf(path, sizeof path, "%s.%s", g->mark, what);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0)
        close(fd);
}

/* Places `rate * seconds` orders open-loop; returns the index of the first. */
static size_t run_rate(loadgen *g, int phase, int step, double rate, double seconds)
{
    size_t n = (size_t)(rate * seconds + 0.5), first = g->norders;
    if (g->norders + n > g->cap)
        die("more orders than planned");
    double start = now_s() + 0.05;
    for (size_t k = 0; k < n; k++) {
        order_rec *o = &g->orders[first + k];
        *o = (order_rec){.due = start + (double)k / rate,
                         .phase = phase,
                         .step = step,
                         .user = (int)((first + k) % (size_t)g->users),
                         .amount = 1 + (int)(rand_r(&g->seed) % 20)};
    }
    g->norders += n;
    size_t next = first;
    while (next < first + n) {
        double now = now_s();
        while (next < first + n && g->orders[next].due <= now && g->nfree > 0) {
            start_order(g, next++);
            if (g->mark && next - 1 == g->mark_start)
                mark(g, "start");
            if (g->mark && next == g->mark_end)
                mark(g, "end");
        }
        double wait = next < first + n ? g->orders[next].due - now : 0;
        pump(g, wait < 0.005 ? wait : 0.005);
    }
    return first;
}

/* Keeps reading until every accepted order since `first` is final, or
 * `timeout` seconds pass. */
static void drain(loadgen *g, size_t first, double timeout)
{
    double until = now_s() + timeout;
    for (;;) {
        bool done = g->running == 0;
        for (size_t i = first; done && i < g->norders; i++)
            if (g->orders[i].status == 0 || (g->orders[i].status == 201 && !g->orders[i].final_at))
                done = false;
        if (done || now_s() > until)
            return;
        pump(g, 0.010);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

/* Latencies (ms) of orders [first, last) that became final. */
static size_t latencies(loadgen *g, size_t first, size_t last, double *out)
{
    size_t n = 0;
    for (size_t i = first; i < last; i++)
        if (g->orders[i].final_at)
            out[n++] = (g->orders[i].final_at - g->orders[i].due) * 1000.0;
    qsort(out, n, sizeof *out, cmp_double);
    return n;
}

/* LOADGEN_ORDERS=PATH: the measured orders that became final, one a line,
 * "id due answered final", in seconds of the real-time clock, which the
 * databases' now() shares: bench/profile.sh's hops_measured splits each
 * order's latency at its transactions' timestamps. */
static void write_orders(const loadgen *g, size_t first, size_t last, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        die("LOADGEN_ORDERS: cannot open the file");
    struct timespec real;
    clock_gettime(CLOCK_REALTIME, &real);
    double to_real = (double)real.tv_sec + (double)real.tv_nsec / 1e9 - now_s();
    for (size_t i = first; i < last; i++) {
        const order_rec *o = &g->orders[i];
        if (o->status == 201 && o->final_at)
            fprintf(f, "%s %.6f %.6f %.6f\n", o->id, o->due + to_real, o->answered + to_real,
                    o->final_at + to_real);
    }
    if (fclose(f) != 0)
        die("LOADGEN_ORDERS: writing the file failed");
}

int main(int argc, char **argv)
{
    if (argc != 8 && argc != 9)
        die("usage: loadgen GATEWAY_URL RUN_ID USERS FIXED_RATE FIXED_SECONDS \"STEP_RATES\" "
            "STEP_SECONDS [WARMUP_SECONDS]");
    loadgen g = {.gateway = argv[1], .run = argv[2], .users = atoi(argv[3]), .seed = 42};
    double fixed_rate = atof(argv[4]), fixed_s = atof(argv[5]), step_s = atof(argv[7]);
    double warm_s = argc == 9 ? atof(argv[8]) : 0;
    if (sscanf(g.gateway, "http://%63[^:]:%d", g.host, &g.port) != 2 || g.users < 1)
        die("GATEWAY_URL must look like http://127.0.0.1:8000, USERS >= 1");
    double rates[32];
    int nrates = 0;
    for (char *save = NULL, *t = strtok_r(argv[6], " ,", &save); t && nrates < 32;
         t = strtok_r(NULL, " ,", &save))
        rates[nrates++] = atof(t);
    double planned = fixed_rate * (warm_s + fixed_s) + 40;
    for (int i = 0; i < nrates; i++)
        planned += rates[i] * step_s;
    g.cap = (size_t)planned + 16;
    g.orders = calloc(g.cap, sizeof *g.orders);
    if (!g.orders || !hcreate_r(g.cap * 2, &g.ids) || !hcreate_r(g.cap * 2, &g.early))
        die("out of memory");

    curl_global_init(CURL_GLOBAL_DEFAULT);
    g.headers = curl_slist_append(NULL, "Content-Type: application/json");
    g.multi = curl_multi_init();
    if ((g.epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll");
    curl_multi_setopt(g.multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(g.multi, CURLMOPT_SOCKETDATA, &g);
    curl_multi_setopt(g.multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(g.multi, CURLMOPT_TIMERDATA, &g);
    curl_multi_setopt(g.multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)MAX_CONNECTIONS);
    curl_multi_setopt(g.multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)MAX_CONNECTIONS);
    /* Keep every connection once opened: by default libcurl's cache holds
     * four per transfer in progress, so each lull closed some and the next
     * burst paid for new ones (~75 new connections a second at 1,000/s). */
    curl_multi_setopt(g.multi, CURLMOPT_MAXCONNECTS, (long)MAX_CONNECTIONS);
    snprintf(g.orders_url, sizeof g.orders_url, "%s/api/orders", g.gateway);
    snprintf(g.sessions_url, sizeof g.sessions_url, "%s/api/sessions", g.gateway);
    const char *refresh = getenv("LOADGEN_TOKEN_REFRESH_S");
    g.refresh_s = refresh ? atof(refresh) : 300;
    for (int i = 0; i < MAX_INFLIGHT; i++) {
        request *r = calloc(1, sizeof *r);
        r->signing_in = -1;
        r->easy = curl_easy_init();
        curl_easy_setopt(r->easy, CURLOPT_URL, g.orders_url);
        curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, g.headers);
        curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, collect);
        curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
        curl_easy_setopt(r->easy, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
        g.free_reqs[g.nfree++] = r;
    }

    g.tokens = calloc((size_t)g.users, sizeof *g.tokens);
    g.user_headers = calloc((size_t)g.users, sizeof *g.user_headers);
    g.signed_in_at = calloc((size_t)g.users, sizeof *g.signed_in_at);
    g.refreshing = calloc((size_t)g.users, sizeof *g.refreshing);
    if (!g.tokens || !g.user_headers || !g.signed_in_at || !g.refreshing)
        die("out of memory");
    for (int u = 0; u < g.users; u++) {
        long status = 0;
        sign_in(&g, u);
        if (!sync_request(&g, u, "/api/accounts", "{}", &status, NULL) || status != 201)
            die("cannot create a user's account");
    }
    fund(&g, 40);
    size_t nusers = g.users > 0 ? (size_t)g.users : 1;
    g.ws = calloc(nusers, sizeof *g.ws);
    for (int u = 0; u < g.users; u++) {
        ws_open(&g, u, &g.ws[u]);
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = WS_TAG | (uint64_t)u};
        epoll_ctl(g.epfd, EPOLL_CTL_ADD, g.ws[u].fd, &ev);
    }

    /* Warm-up: consumer groups form, connections open. */
    size_t warm = g.norders;
    g.cap += 64;
    g.orders = realloc(g.orders, g.cap * sizeof *g.orders);
    run_rate(&g, 0, 0, 20, 2);
    drain(&g, warm, 30);

    json_t *out = json_object();
    double *lat = malloc(g.cap * sizeof *lat);

    /* Phase 1: the fixed rate. */
    fund(&g, fixed_rate * (warm_s + fixed_s));
    g.mark = getenv("LOADGEN_MARK");
    g.mark_start = g.norders + (size_t)(fixed_rate * warm_s + 0.5);
    g.mark_end = g.norders + (size_t)(fixed_rate * (warm_s + fixed_s) + 0.5);
    size_t first = run_rate(&g, 1, 0, fixed_rate, warm_s + fixed_s);
    g.mark = NULL;
    drain(&g, first, 60);
    first += (size_t)(fixed_rate * warm_s + 0.5); /* the measured part */
    size_t n = latencies(&g, first, g.norders, lat);
    json_object_set_new(out, "fixed_rate", json_real(fixed_rate));
    json_object_set_new(out, "warmup_s", json_real(warm_s));
    json_object_set_new(out, "fixed_placed", json_integer((json_int_t)(g.norders - first)));
    json_object_set_new(out, "fixed_final", json_integer((json_int_t)n));
    json_object_set_new(out, "p50_ms", json_real(pct(lat, n, 0.50)));
    json_object_set_new(out, "p99_ms", json_real(pct(lat, n, 0.99)));
    json_object_set_new(out, "p999_ms", json_real(pct(lat, n, 0.999)));
    json_object_set_new(out, "max_ms", json_real(n ? lat[n - 1] : 0));
    size_t na = 0;
    for (size_t i = first; i < g.norders; i++)
        if (g.orders[i].status == 201)
            lat[na++] = (g.orders[i].answered - g.orders[i].due) * 1000.0;
    qsort(lat, na, sizeof *lat, cmp_double);
    json_object_set_new(out, "post_p50_ms", json_real(pct(lat, na, 0.50)));
    json_object_set_new(out, "post_p99_ms", json_real(pct(lat, na, 0.99)));
    const char *orders_path = getenv("LOADGEN_ORDERS");
    if (orders_path)
        write_orders(&g, first, g.norders, orders_path);
    /* A timeline, second by second of due time. */
    json_t *timeline = json_array();
    double t0 = g.orders[first].due;
    for (int sec = 0; sec < (int)(fixed_s + 0.5); sec++) {
        size_t a = first, b;
        while (a < g.norders && g.orders[a].due < t0 + sec)
            a++;
        b = a;
        while (b < g.norders && g.orders[b].due < t0 + sec + 1)
            b++;
        size_t k = latencies(&g, a, b, lat);
        json_array_append_new(timeline, json_pack("{s:i, s:I, s:f, s:f}", "second", sec, "final",
                                                  (json_int_t)k, "p50_ms", pct(lat, k, 0.5),
                                                  "p99_ms", pct(lat, k, 0.99)));
    }
    json_object_set_new(out, "timeline", timeline);
    /* The long run (LOADGEN_SEGMENT orders a segment): does the cost stay
     * flat as the tables grow? Each segment's finals a second (from its
     * first due time to its last final status) and latency. */
    const char *seg_env = getenv("LOADGEN_SEGMENT");
    size_t seg = seg_env ? (size_t)strtoull(seg_env, NULL, 10) : 0;
    json_t *segments = json_array();
    for (size_t a = first; seg && a < g.norders; a += seg) {
        size_t b = a + seg < g.norders ? a + seg : g.norders;
        double last = 0;
        for (size_t i = a; i < b; i++)
            last = g.orders[i].final_at > last ? g.orders[i].final_at : last;
        size_t k = latencies(&g, a, b, lat);
        double span = last - g.orders[a].due;
        json_array_append_new(
            segments, json_pack("{s:I, s:I, s:I, s:f, s:f, s:f}", "from", (json_int_t)(a - first),
                                "orders", (json_int_t)(b - a), "final", (json_int_t)k, "per_s",
                                span > 0 ? (double)k / span : 0.0, "p50_ms", pct(lat, k, 0.5),
                                "p99_ms", pct(lat, k, 0.99)));
    }
    json_object_set_new(out, "segments", segments);

    /* Phase 2: step the rate up until finals stop following. */
    json_t *steps = json_array();
    double best = 0;
    for (int s = 0; s < nrates; s++) {
        fund(&g, rates[s] * step_s);
        size_t f = run_rate(&g, 2, s, rates[s], step_s);
        double window_end = g.orders[g.norders - 1].due + 1.0 / rates[s];
        drain(&g, f, 30);
        size_t on_time = 0, final = 0;
        for (size_t i = f; i < g.norders; i++) {
            final += g.orders[i].final_at > 0;
            on_time += g.orders[i].final_at > 0 && g.orders[i].final_at <= window_end + 1.0;
        }
        double achieved = (double)on_time / step_s;
        size_t k = latencies(&g, f, g.norders, lat);
        bool sustained = achieved >= 0.95 * rates[s];
        json_array_append_new(
            steps, json_pack("{s:f, s:f, s:I, s:f, s:f, s:b}", "offered", rates[s], "achieved",
                             achieved, "final", (json_int_t) final, "p50_ms", pct(lat, k, 0.5),
                             "p99_ms", pct(lat, k, 0.99), "sustained", sustained));
        fprintf(stderr, "loadgen: offered %.0f/s, final on time %.0f/s, p99 %.1f ms%s\n", rates[s],
                achieved, pct(lat, k, 0.99), sustained ? "" : " (not sustained)");
        if (sustained && achieved > best)
            best = achieved;
        if (!sustained)
            break;
    }
    json_object_set_new(out, "steps", steps);
    json_object_set_new(out, "orders_per_s", json_real(best));

    /* What the client saw; the script checks the databases. */
    size_t accepted = 0, rejected = 0, final_seen = 0, cancelled = 0;
    for (size_t i = 0; i < g.norders; i++) {
        accepted += g.orders[i].status == 201;
        rejected += g.orders[i].status != 201;
        final_seen += g.orders[i].final_at > 0;
        cancelled += g.orders[i].cancelled;
    }
    json_object_set_new(out, "orders_total", json_integer((json_int_t)g.norders));
    json_object_set_new(out, "accepted", json_integer((json_int_t)accepted));
    json_object_set_new(out, "rejected", json_integer((json_int_t)rejected));
    json_object_set_new(out, "final_seen", json_integer((json_int_t)final_seen));
    json_object_set_new(out, "cancelled_seen", json_integer((json_int_t)cancelled));
    json_object_set_new(out, "users", json_integer(g.users));
    json_dumpf(out, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
    putchar('\n');
    json_decref(out);
    free(lat);
    return 0;
}
