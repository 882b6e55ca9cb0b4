#include "lib/ws.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <nettle/base64.h>
#include <nettle/sha1.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <wslay/wslay.h>

/* The longest message a client may send (they only listen). */
#define WS_MAX_RECV_MSG 4096

typedef struct ws_conn {
    int fd;
    struct MHD_UpgradeResponseHandle *urh;
    wslay_event_context_ptr ctx;
    char topic[128];
    char *extra; /* bytes MHD read past the handshake: frames to feed first */
    size_t extra_len, extra_off;
    int64_t last_rx_ms, last_ping_ms;
    int64_t expires_at; /* epoch s: closed with WS_CLOSE_EXPIRED then (0: never) */
    uint32_t events;    /* epoll interest */
    bool dead;          /* removed; freed after the current epoll batch */
    struct ws_conn *next;
    struct ws_topic *t;              /* the index entry of its topic */
    struct ws_conn *t_next, *t_prev; /* the other connections on that topic */
} ws_conn;

/* Connections by topic (a user id): a message for one user reaches that
 * user's connections without a look at anybody else's. Chained hashing by
 * hand: a few dozen lines, where a library would be a new dependency. */
#define WS_BUCKETS 1024
typedef struct ws_topic {
    char *name;
    ws_conn *conns;
    struct ws_topic *next;
} ws_topic;

typedef struct ws_msg {
    char *topic, *text;
    struct ws_msg *next;
} ws_msg;

struct ws_hub {
    int epfd, evfd;
    pthread_t thread;
    int max_queue, ping_ms;
    pthread_mutex_t lock; /* guards incoming, pending, stopping */
    ws_conn *incoming;
    ws_msg *pending, *pending_tail;
    bool stopping;
    ws_conn *conns; /* the hub thread's alone, as are the three below */
    ws_conn *dead;  /* removed, to be freed once no epoll entry can name them */
    ws_topic *topics[WS_BUCKETS];
    int64_t next_keep_alive_ms;
    atomic_int count;
    _Atomic uint64_t sent, dropped_slow, accepted, closed_too_big, expired;
};

typedef struct upgrade_arg {
    ws_hub *hub;
    char topic[128];
    int64_t expires_at;
} upgrade_arg;

void ws_accept_key(const char *key, char *out)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    struct sha1_ctx sha;
    uint8_t digest[SHA1_DIGEST_SIZE];
    sha1_init(&sha);
    sha1_update(&sha, strlen(key), (const uint8_t *)key);
    sha1_update(&sha, sizeof guid - 1, (const uint8_t *)guid);
    sha1_digest(&sha, sizeof digest, digest);
    base64_encode_raw(out, sizeof digest, digest); /* 28 characters */
    out[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE)] = '\0';
}

/* ---- wslay callbacks: the socket is non-blocking ---- */

static ssize_t on_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    (void)flags;
    ws_conn *c = user;
    if (c->extra_off < c->extra_len) {
        size_t n = c->extra_len - c->extra_off < len ? c->extra_len - c->extra_off : len;
        memcpy(buf, c->extra + c->extra_off, n);
        c->extra_off += n;
        return (ssize_t)n;
    }
    ssize_t n = recv(c->fd, buf, len, 0);
    if (n > 0) {
        c->last_rx_ms = clock_now_ms();
        return n;
    }
    wslay_event_set_error(ctx, n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
                                   ? WSLAY_ERR_WOULDBLOCK
                                   : WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

static ssize_t on_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    (void)flags;
    ws_conn *c = user;
    ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
    if (n >= 0)
        return n;
    wslay_event_set_error(ctx, errno == EAGAIN || errno == EWOULDBLOCK
                                   ? WSLAY_ERR_WOULDBLOCK
                                   : WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user)
{
    /* Clients only listen; wslay answers pings and closes by itself. */
    (void)ctx, (void)arg, (void)user;
}

static const struct wslay_event_callbacks callbacks = {
    .recv_callback = on_recv,
    .send_callback = on_send,
    .on_msg_recv_callback = on_msg,
};

/* ---- the hub thread ---- */

static ws_topic **topic_link(ws_hub *hub, const char *name)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    ws_topic **link = &hub->topics[h % WS_BUCKETS];
    while (*link && strcmp((*link)->name, name) != 0)
        link = &(*link)->next;
    return link; /* the entry, or the NULL at the end of its chain */
}

static bool index_add(ws_hub *hub, ws_conn *c)
{
    ws_topic **link = topic_link(hub, c->topic);
    if (!*link) {
        ws_topic *t = calloc(1, sizeof *t);
        if (!t || !(t->name = strdup(c->topic))) {
            free(t);
            return false;
        }
        *link = t;
    }
    c->t = *link;
    c->t_prev = NULL;
    c->t_next = c->t->conns;
    if (c->t_next)
        c->t_next->t_prev = c;
    c->t->conns = c;
    return true;
}

static void index_remove(ws_hub *hub, ws_conn *c)
{
    if (!c->t)
        return;
    if (c->t_prev)
        c->t_prev->t_next = c->t_next;
    else
        c->t->conns = c->t_next;
    if (c->t_next)
        c->t_next->t_prev = c->t_prev;
    if (!c->t->conns) { /* the topic's last connection: the entry goes */
        ws_topic **link = topic_link(hub, c->t->name);
        *link = c->t->next;
        free(c->t->name);
        free(c->t);
    }
    c->t = NULL;
}

static void conn_close(ws_hub *hub, ws_conn *c)
{
    if (wslay_event_get_close_sent(c->ctx) &&
        wslay_event_get_status_code_sent(c->ctx) == WSLAY_CODE_MESSAGE_TOO_BIG)
        atomic_fetch_add(&hub->closed_too_big, 1);
    epoll_ctl(hub->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    wslay_event_context_free(c->ctx);
    MHD_upgrade_action(c->urh, MHD_UPGRADE_ACTION_CLOSE); /* MHD closes the socket */
    free(c->extra);
    free(c);
    atomic_fetch_sub(&hub->count, 1);
}

/* Sets the epoll interest from what wslay wants; false when it wants
 * nothing more (closed both ways). */
static bool conn_rearm(ws_hub *hub, ws_conn *c)
{
    uint32_t ev = 0;
    if (wslay_event_want_read(c->ctx))
        ev |= EPOLLIN;
    if (wslay_event_want_write(c->ctx))
        ev |= EPOLLOUT;
    if (!ev)
        return false;
    if (ev != c->events) {
        struct epoll_event e = {.events = ev, .data.ptr = c};
        epoll_ctl(hub->epfd, EPOLL_CTL_MOD, c->fd, &e);
        c->events = ev;
    }
    return true;
}

/* Runs the connection's I/O; false when it is finished. */
static bool conn_io(ws_hub *hub, ws_conn *c, uint32_t events)
{
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || c->extra_off < c->extra_len)
        if (wslay_event_recv(c->ctx) != 0)
            return false;
    if (wslay_event_send(c->ctx) != 0)
        return false;
    return conn_rearm(hub, c);
}

/* Takes a connection out of the hub. It is freed later, by bury_dead:
 * entries of the epoll batch being handled may still point at it (man 7
 * epoll), and they must find it marked dead, not freed. */
static void remove_conn(ws_hub *hub, ws_conn *dead)
{
    for (ws_conn **p = &hub->conns; *p; p = &(*p)->next) {
        if (*p == dead) {
            *p = dead->next;
            dead->dead = true;
            index_remove(hub, dead);
            epoll_ctl(hub->epfd, EPOLL_CTL_DEL, dead->fd, NULL);
            dead->next = hub->dead;
            hub->dead = dead;
            return;
        }
    }
}

/* Frees the connections removed since the last call. */
static void bury_dead(ws_hub *hub)
{
    while (hub->dead) {
        ws_conn *c = hub->dead;
        hub->dead = c->next;
        conn_close(hub, c);
    }
}

static void deliver(ws_hub *hub, ws_msg *m)
{
    ws_topic *t = NULL;
    if (m->topic && !(t = *topic_link(hub, m->topic)))
        return; /* nobody follows it */
    for (ws_conn *c = t ? t->conns : hub->conns, *next; c; c = next) {
        next = t ? c->t_next : c->next;
        if ((int)wslay_event_get_queued_msg_count(c->ctx) >= hub->max_queue) {
            /* Too slow to follow: say so and let it reconnect and reload. */
            atomic_fetch_add(&hub->dropped_slow, 1);
            wslay_event_queue_close(c->ctx, 1008, (const uint8_t *)"too slow", 8);
        } else {
            struct wslay_event_msg msg = {WSLAY_TEXT_FRAME, (const uint8_t *)m->text,
                                          strlen(m->text)};
            if (wslay_event_queue_msg(c->ctx, &msg) == 0)
                atomic_fetch_add(&hub->sent, 1);
        }
        if (!conn_io(hub, c, 0))
            remove_conn(hub, c);
    }
}

static void take_new_work(ws_hub *hub)
{
    uint64_t ignored;
    ssize_t r = read(hub->evfd, &ignored, sizeof ignored);
    (void)r;
    pthread_mutex_lock(&hub->lock);
    ws_conn *incoming = hub->incoming;
    ws_msg *msgs = hub->pending;
    hub->incoming = NULL;
    hub->pending = hub->pending_tail = NULL;
    pthread_mutex_unlock(&hub->lock);

    while (incoming) {
        ws_conn *c = incoming;
        incoming = c->next;
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        c->events = EPOLLIN;
        c->next = hub->conns;
        hub->conns = c;
        if (!index_add(hub, c) || epoll_ctl(hub->epfd, EPOLL_CTL_ADD, c->fd, &e) != 0 ||
            !conn_io(hub, c, 0))
            remove_conn(hub, c);
    }
    while (msgs) {
        ws_msg *m = msgs;
        msgs = m->next;
        deliver(hub, m);
        free(m->topic);
        free(m->text);
        free(m);
    }
}

/* Pings and drops, at most four times per ping interval (not at every
 * wake-up: a busy hub wakes for every published batch). */
static void keep_alive(ws_hub *hub)
{
    int64_t now = clock_now_ms();
    if (now < hub->next_keep_alive_ms)
        return;
    hub->next_keep_alive_ms = now + (hub->ping_ms >= 40 ? hub->ping_ms / 4 : 10);
    int64_t wall = clock_wall_s();
    for (ws_conn *c = hub->conns, *next; c; c = next) {
        next = c->next;
        bool ok = true;
        if (now - c->last_rx_ms > 3 * (int64_t)hub->ping_ms) {
            ok = false; /* no pong to three pings: the peer is gone */
        } else if (c->expires_at && wall >= c->expires_at) {
            /* Its token has expired: it hears nothing more of the user's
             * orders. The page signs in again on this code. */
            static const char why[] = "token expired";
            wslay_event_queue_close(c->ctx, WS_CLOSE_EXPIRED, (const uint8_t *)why, sizeof why - 1);
            conn_io(hub, c, 0);
            atomic_fetch_add(&hub->expired, 1);
            ok = false;
        } else if (now - c->last_ping_ms >= hub->ping_ms && now - c->last_rx_ms >= hub->ping_ms) {
            struct wslay_event_msg ping = {WSLAY_PING, NULL, 0};
            wslay_event_queue_msg(c->ctx, &ping);
            c->last_ping_ms = now;
            ok = conn_io(hub, c, 0);
        }
        if (!ok)
            remove_conn(hub, c);
    }
}

static void *hub_main(void *arg)
{
    pthread_setname_np(pthread_self(), "ws-hub"); /* for top -H, perf, pidstat -t */
    ws_hub *hub = arg;
    struct epoll_event events[64];
    for (;;) {
        pthread_mutex_lock(&hub->lock);
        bool stop = hub->stopping;
        pthread_mutex_unlock(&hub->lock);
        if (stop)
            break;
        int n = epoll_wait(hub->epfd, events, 64, 1000);
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL) {
                take_new_work(hub);
                continue;
            }
            ws_conn *c = events[i].data.ptr;
            if (!c->dead && !conn_io(hub, c, events[i].events))
                remove_conn(hub, c);
        }
        keep_alive(hub);
        bury_dead(hub);
    }
    /* Going away: a close frame to each, best effort, then the sockets. */
    take_new_work(hub);
    while (hub->conns) {
        ws_conn *c = hub->conns;
        wslay_event_queue_close(c->ctx, 1001, (const uint8_t *)"going away", 10);
        wslay_event_send(c->ctx);
        hub->conns = c->next;
        index_remove(hub, c);
        conn_close(hub, c);
    }
    bury_dead(hub);
    return NULL;
}

static void on_upgraded(void *cls, struct MHD_Connection *connection, void *con_cls,
                        const char *extra_in, size_t extra_in_size, int sock,
                        struct MHD_UpgradeResponseHandle *urh)
{
    (void)connection, (void)con_cls;
    upgrade_arg *a = cls;
    ws_hub *hub = a->hub;
    ws_conn *c = calloc(1, sizeof *c);
    if (!c || wslay_event_context_server_init(&c->ctx, &callbacks, c) != 0) {
        free(c);
        free(a);
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
        return;
    }
    /* Clients only listen (and answer pings): a message longer than this
     * closes the connection with 1009, instead of wslay's default of
     * buffering up to 2^31 bytes. */
    wslay_event_config_set_max_recv_msg_length(c->ctx, WS_MAX_RECV_MSG);
    c->fd = sock;
    c->urh = urh;
    snprintf(c->topic, sizeof c->topic, "%s", a->topic);
    c->expires_at = a->expires_at;
    free(a);
    c->last_rx_ms = c->last_ping_ms = clock_now_ms();
    if (extra_in_size && (c->extra = malloc(extra_in_size))) {
        memcpy(c->extra, extra_in, extra_in_size);
        c->extra_len = extra_in_size;
    } else if (extra_in_size) {
        /* Without memory for the bytes that came with the upgrade, the
         * socket cannot be read from its start: close it (the page
         * reconnects). */
        wslay_event_context_free(c->ctx);
        free(c);
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
        return;
    }
    pthread_mutex_lock(&hub->lock);
    if (hub->stopping) { /* shutting down: the hub thread is gone */
        pthread_mutex_unlock(&hub->lock);
        wslay_event_context_free(c->ctx);
        free(c->extra);
        free(c);
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
        return;
    }
    atomic_fetch_add(&hub->count, 1);
    atomic_fetch_add(&hub->accepted, 1);
    c->next = hub->incoming;
    hub->incoming = c;
    pthread_mutex_unlock(&hub->lock);
    uint64_t one = 1;
    ssize_t w = write(hub->evfd, &one, sizeof one);
    (void)w;
}

static bool header_has(const http_req *req, const char *name, const char *token)
{
    const char *v = http_header(req, name);
    if (!v)
        return false;
    size_t n = strlen(token);
    for (const char *p = v; *p; p++)
        if (strncasecmp(p, token, n) == 0)
            return true;
    return false;
}

void ws_accept(ws_hub *hub, http_req *req, http_res *res, const char *topic, int64_t expires_at)
{
    const char *key = http_header(req, "Sec-WebSocket-Key");
    const char *version = http_header(req, "Sec-WebSocket-Version");
    /* RFC 6455 §4.2: not an upgrade at all is 426; an upgrade whose
     * handshake is malformed is 400; a version we do not speak is 426 with
     * the one we do. */
    if (!header_has(req, "Upgrade", "websocket")) {
        http_error(res, 426, "upgrade_required", "this is a WebSocket endpoint");
        http_add_header(res, "Upgrade", "websocket");
        return;
    }
    if (!header_has(req, "Connection", "upgrade") || !key || strlen(key) != 24 || !version) {
        http_error(res, 400, "invalid_handshake",
                   "a WebSocket handshake needs Connection: Upgrade, a 24-character "
                   "Sec-WebSocket-Key and Sec-WebSocket-Version");
        return;
    }
    if (strcmp(version, "13") != 0) {
        http_error(res, 426, "upgrade_required", "WebSocket version 13 is required");
        http_add_header(res, "Sec-WebSocket-Version", "13");
        return;
    }
    upgrade_arg *a = calloc(1, sizeof *a);
    if (!a) {
        http_error(res, 500, "internal", "out of memory");
        return;
    }
    a->hub = hub;
    a->expires_at = expires_at;
    snprintf(a->topic, sizeof a->topic, "%s", topic);
    char accept[32];
    ws_accept_key(key, accept);
    res->status = 101;
    res->upgrade = on_upgraded;
    res->upgrade_cls = a;
    http_add_header(res, "Upgrade", "websocket");
    http_add_header(res, "Sec-WebSocket-Accept", accept);
}

void ws_broadcast(ws_hub *hub, const char *text)
{
    ws_publish(hub, NULL, text);
}

void ws_publish(ws_hub *hub, const char *topic, const char *text)
{
    ws_msg *m = calloc(1, sizeof *m);
    if (!m)
        return;
    m->topic = topic ? strdup(topic) : NULL; /* NULL: everyone */
    m->text = strdup(text);
    pthread_mutex_lock(&hub->lock);
    if (hub->stopping || !m->text) { /* closed: nobody left to send it to */
        pthread_mutex_unlock(&hub->lock);
        free(m->topic);
        free(m->text);
        free(m);
        return;
    }
    if (hub->pending_tail)
        hub->pending_tail->next = m;
    else
        hub->pending = m;
    hub->pending_tail = m;
    pthread_mutex_unlock(&hub->lock);
    uint64_t one = 1;
    ssize_t w = write(hub->evfd, &one, sizeof one);
    (void)w;
}

int ws_count(ws_hub *hub)
{
    return atomic_load(&hub->count);
}

ws_hub *ws_hub_start(int max_queue, int ping_ms)
{
    ws_hub *hub = calloc(1, sizeof *hub);
    if (!hub)
        return NULL;
    hub->max_queue = max_queue;
    hub->ping_ms = ping_ms;
    pthread_mutex_init(&hub->lock, NULL);
    hub->epfd = epoll_create1(EPOLL_CLOEXEC);
    hub->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
    if (hub->epfd < 0 || hub->evfd < 0 || epoll_ctl(hub->epfd, EPOLL_CTL_ADD, hub->evfd, &e) ||
        pthread_create(&hub->thread, NULL, hub_main, hub) != 0) {
        log_msg(LOG_ERROR, NULL, "cannot start the WebSocket hub: %s", strerror(errno));
        close(hub->epfd);
        close(hub->evfd);
        free(hub);
        return NULL;
    }
    return hub;
}

void ws_hub_close(ws_hub *hub)
{
    if (!hub)
        return;
    pthread_mutex_lock(&hub->lock);
    bool running = !hub->stopping;
    hub->stopping = true;
    pthread_mutex_unlock(&hub->lock);
    if (!running)
        return;
    uint64_t one = 1;
    ssize_t w = write(hub->evfd, &one, sizeof one);
    (void)w;
    pthread_join(hub->thread, NULL);
}

void ws_hub_free(ws_hub *hub)
{
    if (!hub)
        return;
    ws_hub_close(hub);
    /* Whatever was published after the close was dropped by ws_publish;
     * an upgrade completed after it was closed by on_upgraded. */
    close(hub->epfd);
    close(hub->evfd);
    pthread_mutex_destroy(&hub->lock);
    free(hub);
}

void ws_metrics(ws_hub *hub, FILE *out)
{
    metrics_series(out, "ws_connections", "gauge", "Open WebSocket connections",
                   (uint64_t)ws_count(hub));
    metrics_series(out, "ws_accepted_total", "counter", "WebSocket connections accepted",
                   atomic_load(&hub->accepted));
    metrics_series(out, "ws_messages_sent_total", "counter", "Messages queued to WebSocket clients",
                   atomic_load(&hub->sent));
    metrics_series(out, "ws_dropped_slow_total", "counter",
                   "WebSocket clients closed for not keeping up (1008)",
                   atomic_load(&hub->dropped_slow));
    metrics_series(out, "ws_closed_too_big_total", "counter",
                   "WebSocket clients closed for sending a message over 4 KiB (1009)",
                   atomic_load(&hub->closed_too_big));
    metrics_series(out, "ws_closed_expired_total", "counter",
                   "WebSocket clients closed when their token expired (4001)",
                   atomic_load(&hub->expired));
}
