#include "orders/live.h"
#include "lib/log.h"
#include "orders/app.h"
#include "orders/store.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NOTIFY_MAX 7900 /* PostgreSQL refuses payloads of 8000 bytes and more */
#define LOAD_MAX 256

struct live {
    char *db_url;
    ws_hub *hub;
    pthread_t thread;
    atomic_bool stopping;
    bool lost_connection; /* the listener thread's alone */
};

void live_batch_reset(live_batch *b)
{
    b->len = 0;
}

void live_batch_add(live_batch *b, const char *order_id, const char *user_id)
{
    size_t need = b->len + strlen(order_id) + strlen(user_id) + 3;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < need)
            cap *= 2;
        char *grown = realloc(b->items, cap);
        if (!grown)
            return;
        b->items = grown;
        b->cap = cap;
    }
    b->len += (size_t)sprintf(b->items + b->len, "%s%s:%s", b->len ? "," : "", order_id, user_id);
}

int live_batch_flush(live_batch *b, db_conn *c)
{
    size_t start = 0;
    while (start < b->len) {
        /* Cut at the last item boundary under the limit. */
        size_t end = b->len;
        if (end - start > NOTIFY_MAX) {
            end = start + NOTIFY_MAX;
            while (end > start && b->items[end] != ',')
                end--;
        }
        char chunk[NOTIFY_MAX + 1];
        memcpy(chunk, b->items + start, end - start);
        chunk[end - start] = '\0';
        int rc = store_notify(c, chunk);
        if (rc < 0)
            return rc;
        start = end + 1;
    }
    return 0;
}

void live_batch_free(live_batch *b)
{
    free(b->items);
    memset(b, 0, sizeof *b);
}

/* Loads the announced orders and pushes each to its owner's sockets. */
static void push(live *l, db_conn *c, const char *payload)
{
    if (ws_count(l->hub) == 0)
        return; /* nobody is watching this instance */
    char *ids = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&ids, &len);
    fputc('{', out);
    int n = 0;
    for (const char *p = payload; *p;) {
        const char *colon = strchr(p, ':'), *comma = strchr(p, ',');
        if (!colon)
            break;
        fprintf(out, "%s%.*s", n++ ? "," : "", (int)(colon - p), p);
        p = comma ? comma + 1 : p + strlen(p);
    }
    fputc('}', out);
    fclose(out);
    order *orders = calloc(LOAD_MAX, sizeof *orders);
    int got = orders ? store_orders_by_ids(c, ids, orders, LOAD_MAX) : 0;
    for (int i = 0; i < got; i++) {
        json_t *event =
            json_pack("{s:s, s:o}", "type", "order.updated", "order", order_json(&orders[i]));
        char *text = json_dumps(event, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (text)
            ws_publish(l->hub, orders[i].user_id, text);
        free(text);
        json_decref(event);
    }
    free(orders);
    free(ids);
}

static void *live_main(void *arg)
{
    live *l = arg;
    static const db_stmt *const sets[] = {orders_stmts, NULL};
    db_conn *c = NULL;
    while (!atomic_load(&l->stopping)) {
        if (!c) {
            c = db_conn_open(l->db_url, sets);
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
            push(l, c, n->extra);
            PQfreemem(n);
        }
    }
    db_conn_close(c);
    return NULL;
}

live *live_start(const char *db_url, ws_hub *hub)
{
    live *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->db_url = strdup(db_url);
    l->hub = hub;
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
