/* GET /reconciliation: a service's own checks of its books, for operators
 * (make reconcile calls it on each service, then checks the two databases
 * against each other: docs/architecture.md, "The books"). The service
 * registers a statement named BOOKS_STMT taking a user-id LIKE pattern
 * ($1: the accounts and orders to check) and giving one row per check:
 * name, how many things it checked, how many did not hold, and one that did
 * not (or NULL). */
#ifndef SHOP_BOOKS_H
#define SHOP_BOOKS_H

#include "lib/http.h"

#include <stddef.h>

#define BOOKS_STMT "books_check"

/* The route's ctx: where the app keeps its pool and its callers. */
typedef struct books_service {
    size_t db;      /* offsetof(app type, its db_pool *) */
    size_t callers; /* offsetof(app type, its callers) */
} books_service;

#define BOOKS_ROUTE(service)                                                                       \
    {                                                                                              \
        "GET", "/reconciliation", books_check, service                                             \
    }

/* Answers 200 {"ok", "users", "checks": [{"name", "checked", "mismatches",
 * "example"}]} (ok: every check held), 400 for a bad `users` pattern, 401,
 * 403 (not an operator), 503. */
void books_check(http_req *req, http_res *res);

#endif
