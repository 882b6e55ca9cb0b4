/* Live order status for browsers. The results consumer announces each
 * batch's changed orders, as the events themselves, with one NOTIFY per
 * 7,900 bytes (delivered at commit, to every orders instance); each
 * instance's listener pushes each {"type":"order.updated","order":{...}}
 * through its WebSocket hub to the owner's connections, without reading
 * the database again. So a browser connected to one instance
 * sees changes processed by another. After the listener lost its database
 * connection, it sends {"type":"resync"} to every socket: changes announced
 * meanwhile were missed, and the browser reloads its list.
 * Each event names the trace context of the message that changed its
 * order, and its push is an "orders push" span in that trace, on whichever
 * instance pushes it. */
#ifndef ORDERS_LIVE_H
#define ORDERS_LIVE_H

#include "lib/db.h"
#include "lib/trace.h"
#include "lib/ws.h"
#include "orders/order.h"

typedef struct live live;

/* Collects a batch's changes, in the consumer thread: reset, add, flush
 * (inside the transaction). */
typedef struct live_batch {
    /* one line per event: "user_id TAB order_id TAB traceparent TAB
     * event-json LF" (traceparent "" when the change is in no trace) */
    char *items;
    size_t len, cap;
} live_batch;

void live_batch_reset(live_batch *b);
/* Returns -ENOMEM when out of memory (that browser update is lost, the order
 * is not). */
int live_batch_add(live_batch *b, const order *o, const trace_ctx *trace);
/* Issues the NOTIFYs (chunks under PostgreSQL's 8000-byte limit). */
int live_batch_flush(live_batch *b, db_conn *c);
void live_batch_free(live_batch *b);

/* Starts the listener on its own connection to `db_url` (reconnecting
 * after a database restart). `hub` and `traces` (NULL: no push spans) are
 * borrowed. */
live *live_start(const char *db_url, ws_hub *hub, tracer *traces);
void live_stop(live *l);

#endif
