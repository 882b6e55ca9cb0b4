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

/* The group's transaction (group_run_fn). */
void orders_create_group(void *app, group_item **items, int n);

#endif
