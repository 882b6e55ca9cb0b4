/* POST /orders through a group commit (lib/group.h): the handler checks
 * the request and queues it; a writer inserts every order waiting, with
 * its payment request and its Idempotency-Key, in one transaction. */
#ifndef ORDERS_CREATE_H
#define ORDERS_CREATE_H

#include "lib/group.h"
#include "lib/http.h"
#include "orders/app.h"

/* Queues a new order of `user_id` (all of it valid) under the request's
 * Idempotency-Key, if any, or answers now: 400 for a malformed key, 503
 * when the service is stopping. */
void orders_create(orders_app *app, http_req *req, http_res *res, const char *user_id,
                   int64_t amount, const char *description);

/* The group's transaction (group_run_fn). A 201 only once committed; 503
 * not_created when nothing was written (the deadline passed: the database
 * did not take it in time), 503 outcome_unknown when the connection broke
 * while it could commit. */
void orders_create_group(void *app, group_item **items, int n);

/* The answer of a request that waited past ORDERS_CREATE_DEADLINE_MS
 * (group_expire_fn): 503 not_created, Retry-After. */
void orders_create_expired(void *app, group_item *item);

#endif
