/* The HTTP answer to a failure of the database: what a client may do about
 * it (retry, or retry with the same Idempotency-Key) said the same way by
 * every handler and by the modules that run handlers' work (idem,
 * deadletters, books). Below them all: it knows only http and db. */
#ifndef SHOP_ANSWER_H
#define SHOP_ANSWER_H

#include "lib/db.h"
#include "lib/http.h"

/* Answers a database failure `rc`: 503 (with Retry-After) when retrying
 * may help, else 500. */
void answer_db_error(http_res *res, int rc);

/* Answers the failure of a write that ran on `c` (NULL: none was taken):
 * when its COMMIT, or a statement outside a transaction, lost its
 * connection before the answer (db_in_doubt), whether it happened is
 * unknown, and the answer says so: 503 outcome_unknown, Retry-After. A
 * retry with the same Idempotency-Key gets the stored outcome. Otherwise
 * as answer_db_error: nothing was written. */
void answer_write_error(http_res *res, int rc, const db_conn *c);

/* The answer when the outcome of a write is unknown (answer_write_error). */
void answer_outcome_unknown(http_res *res);

#endif
