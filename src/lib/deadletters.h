/* Operators' dead-letter tools, the same for every service with a consumer
 * (docs/architecture.md, "The guarantees"): list what was set aside (topic, partition, offset,
 * reason, the payload's first bytes, when), replay one or all after a fix, or discard one with a
 * reason. A replay goes through the consumer's own handler, in one transaction with marking the
 * dead letter replayed, exactly as if the message had just arrived: idempotent as the handler is (a
 * payment request already decided is answered again, never debited twice). Every action is logged
 * with the operator who took it; a non-operator gets 403. */
#ifndef SHOP_DEADLETTERS_H
#define SHOP_DEADLETTERS_H

#include "lib/caller.h"
#include "lib/consumer.h"
#include "lib/http.h"

#include <stddef.h>

extern const db_stmt deadletter_stmts[];

/* A service's side of the tools; the routes' ctx. */
typedef struct deadletter_service {
    size_t db;                 /* offsetof(app type, its db_pool *) */
    size_t callers;            /* offsetof(app type, its callers) */
    consumer_handle_fn handle; /* what the consumer runs for a batch */
    void (*after_commit)(void *app);
} deadletter_service;

/* The four routes, to append to the service's table (ctx: its service). */
#define DEADLETTER_NROUTES 4
#define DEADLETTER_ROUTES(service)                                                                 \
    {"GET", "/dead-letters", deadletter_list, service},                                            \
        {"POST", "/dead-letters/replay", deadletter_replay_all, service},                          \
        {"POST", "/dead-letters/{id}/replay", deadletter_replay, service},                         \
    {                                                                                              \
        "POST", "/dead-letters/{id}/discard", deadletter_discard, service                          \
    }

void deadletter_list(http_req *req, http_res *res);
void deadletter_replay(http_req *req, http_res *res);
void deadletter_replay_all(http_req *req, http_res *res);
void deadletter_discard(http_req *req, http_res *res);

#endif
