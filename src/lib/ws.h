/* WebSocket push (RFC 6455) for browsers following their orders. The
 * upgrade is libmicrohttpd's; the framing is libwslay's. One hub thread
 * serves every socket through epoll (not a thread per socket), pings idle
 * peers and drops dead ones, closes cleanly, and bounds each connection's
 * send queue: a client that cannot keep up is disconnected (1008) rather
 * than buffered without end. Each connection follows one topic (a user
 * id); ws_publish sends a text message to every connection on a topic. */
#ifndef SHOP_WS_H
#define SHOP_WS_H

#include "lib/http.h"

#include <stdio.h>

typedef struct ws_hub ws_hub;

/* `max_queue`: messages a connection may have waiting; `ping_ms`: idle time
 * before a ping (a peer silent for 3 pings is dropped). NULL on error. */
ws_hub *ws_hub_start(int max_queue, int ping_ms);

/* Shutting down takes two steps, because the hub is shared. ws_hub_close
 * closes every connection (1001, going away) and stops the thread: call it
 * before http_stop (libmicrohttpd wants upgraded sockets closed first).
 * After it, ws_publish drops its message and a late upgrade is closed, so
 * the threads that publish may still run. ws_hub_free, once none of them
 * can touch the hub any more, releases it. Both NULL-safe. */
void ws_hub_close(ws_hub *hub);
void ws_hub_free(ws_hub *hub);

/* The close code of a socket whose token expired: the page signs in again. */
#define WS_CLOSE_EXPIRED 4001

/* For a GET handler: checks the upgrade request and answers 101 with the
 * hub taking the socket, subscribed to `topic` (copied), until
 * `expires_at` (epoch seconds, its token's expiry; 0: no end), when it is
 * closed with WS_CLOSE_EXPIRED. A request that is not a WebSocket upgrade
 * gets 426 upgrade_required. */
void ws_accept(ws_hub *hub, http_req *req, http_res *res, const char *topic, int64_t expires_at);

/* Sends `text` to every connection following `topic` (NULL: every
 * connection). Thread-safe; does not block on the network. */
void ws_publish(ws_hub *hub, const char *topic, const char *text);

/* Sends `text` to every connection, whatever it follows. Thread-safe. */
void ws_broadcast(ws_hub *hub, const char *text);

/* How many connections are open (for skipping work nobody watches). */
int ws_count(ws_hub *hub);

void ws_metrics(ws_hub *hub, FILE *out);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2). Pure.
 * `out` has room for 29 bytes. */
void ws_accept_key(const char *key, char *out);

#endif
