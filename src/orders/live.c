#include "orders/live.h"
#include "lib/log.h"
#include "orders/app.h"
#include "orders/store.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NOTIFY_MAX 7900 /* PostgreSQL refuses payloads of 8000 bytes and more */

struct live {
    char *db_url;
    ws_hub *hub;
    tracer *traces;
    pthread_t thread;
    atomic_bool stopping;
    bool lost_connection; /* the listener thread's alone */
};

void live_batch_reset(live_batch *b)
{
    b->len = 0;
}

int live_batch_add(live_batch *b, const order *o, const trace_ctx *trace)
{
    char tp[TRACE_PARENT_LEN + 1] = "";
    if (trace && trace_valid(trace))
        trace_format(trace, tp);
    json_t *event = json_pack("{s:s, s:o}", "type", "order.updated", "order", order_json(o));
    char *text = event ? json_dumps(event, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(event);
    if (!text)
        return -ENOMEM;
    /* Compact JSON has no raw newline and a user id no tab: the line's
     * separators cannot occur inside it. */
    /* "user\torder\ttraceparent\ttext\n" and the NUL sprintf writes after. */
    size_t need =
        b->len + strlen(o->user_id) + 1 + strlen(o->id) + 1 + strlen(tp) + 1 + strlen(text) + 1 + 1;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 8192;
        while (cap < need)
            cap *= 2;
        char *grown = realloc(b->items, cap);
        if (!grown) {
            free(text);
            return -ENOMEM;
        }
        b->items = grown;
        b->cap = cap;
    }
    b->len += (size_t)sprintf(b->items + b->len, "%s\t%s\t%s\t%s\n", o->user_id, o->id, tp, text);
    free(text);
    return 0;
}

int live_batch_flush(live_batch *b, db_conn *c)
{
    size_t start = 0;
    while (start < b->len) {
        /* As many whole lines as fit under the limit. */
        size_t end = start, next = start;
        while (next < b->len) {
            const char *nl = memchr(b->items + next, '\n', b->len - next);
            next = nl ? (size_t)(nl - b->items) + 1 : b->len;
            if (next - start > NOTIFY_MAX)
                break;
            end = next;
        }
        if (end == start) {
            /* Cannot happen within the API's limits (an event is at most
             * ~3.5 kB); the order is stored, only its push is skipped. */
            log_msg(LOG_WARN, NULL, "an order event over %d bytes was not pushed", NOTIFY_MAX);
            start = next;
            continue;
        }
        char chunk[NOTIFY_MAX + 1];
        memcpy(chunk, b->items + start, end - start);
        chunk[end - start] = '\0';
        int rc = store_notify(c, chunk);
        if (rc < 0)
            return rc;
        start = end;
    }
    return 0;
}

void live_batch_free(live_batch *b)
{
    free(b->items);
    memset(b, 0, sizeof *b);
}

/* Reads the next tab-ended field of a line ending at `nl` into out[size];
 * returns what follows its tab, or NULL. */
static const char *field(const char *p, const char *nl, char *out, size_t size)
{
    const char *tab = memchr(p, '\t', (size_t)(nl - p));
    if (!tab)
        return NULL;
    snprintf(out, size, "%.*s", (int)(tab - p), p);
    return tab + 1;
}

/* Pushes each announced event to its owner's sockets on this instance, in
 * an "orders push" span of the trace it names (handing it to the hub's
 * thread, which writes it to each socket). */
static void push(live *l, const char *payload)
{
    int watching = ws_count(l->hub);
    for (const char *p = payload; *p;) {
        const char *nl = strchr(p, '\n');
        char user[65], id[MSG_ORDER_ID_LEN + 1], tp[TRACE_PARENT_LEN + 1];
        const char *text = nl ? field(p, nl, user, sizeof user) : NULL;
        text = text ? field(text, nl, id, sizeof id) : NULL;
        text = text ? field(text, nl, tp, sizeof tp) : NULL;
        if (!text)
            break;
        trace_ctx parent;
        trace_span span = {0};
        if (l->traces && trace_parse(tp, &parent) == 0) {
            trace_begin(l->traces, &span, &parent, "orders push", TRACE_INTERNAL);
            trace_tag(&span, "shop.order_id", id);
            trace_tag_int(&span, "shop.push.sockets_open", watching);
        }
        char *event = watching ? strndup(text, (size_t)(nl - text)) : NULL;
        if (event) /* nobody watching this instance: nothing to send */
            ws_publish(l->hub, user, event);
        free(event);
        trace_end(l->traces, &span);
        p = nl + 1;
    }
}

static void *live_main(void *arg)
{
    pthread_setname_np(pthread_self(), "live"); /* for top -H, perf, pidstat -t */
    live *l = arg;
    db_conn *c = NULL;
    while (!atomic_load(&l->stopping)) {
        if (!c) {
            c = db_conn_open(l->db_url, NULL); /* LISTEN only */
            if (!c || db_exec_sql(c, "LISTEN " STORE_CHANNEL) != 0) {
                db_conn_close(c);
                c = NULL;
                struct timespec t = {.tv_nsec = 500 * 1000000};
                nanosleep(&t, NULL);
                continue;
            }
            log_msg(LOG_INFO, NULL, "listening for order changes");
            /* Changes announced while we were not listening are lost to
             * us: tell every browser here to reload its list. */
            if (l->lost_connection)
                ws_broadcast(l->hub, "{\"type\":\"resync\"}");
            l->lost_connection = false;
        }
        PGconn *pg = db_pg(c);
        struct pollfd p = {.fd = PQsocket(pg), .events = POLLIN};
        if (poll(&p, 1, 500) > 0 && (!PQconsumeInput(pg) || PQstatus(pg) != CONNECTION_OK)) {
            log_msg(LOG_WARN, NULL, "order change listener lost the database; reconnecting");
            db_conn_close(c);
            c = NULL;
            l->lost_connection = true;
            continue;
        }
        PGnotify *n;
        while ((n = PQnotifies(pg))) {
            push(l, n->extra);
            PQfreemem(n);
        }
    }
    db_conn_close(c);
    return NULL;
}

live *live_start(const char *db_url, ws_hub *hub, tracer *traces)
{
    live *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->db_url = strdup(db_url);
    l->hub = hub;
    l->traces = traces;
    if (pthread_create(&l->thread, NULL, live_main, l) != 0) {
        free(l->db_url);
        free(l);
        return NULL;
    }
    return l;
}

void live_stop(live *l)
{
    if (!l)
        return;
    atomic_store(&l->stopping, true);
    pthread_join(l->thread, NULL);
    free(l->db_url);
    free(l);
}
