#include "lib/answer.h"

void answer_db_error(http_res *res, int rc)
{
    if (rc == -DB_SYSTEMIC) {
        /* Logged where it happened; the same for every caller until an
         * operator mends it (a schema change half done, a privilege). */
        http_error(res, 503, "database_failing",
                   "the database refuses this for every caller now; retry later");
        http_add_header(res, "Retry-After", "5");
    } else if (db_transient(rc)) {
        http_error(res, 503, "database_unavailable", "the database cannot be reached; retry");
        http_add_header(res, "Retry-After", "1");
    } else {
        http_error(res, 500, "internal", "unexpected database error");
    }
}

void answer_outcome_unknown(http_res *res)
{
    http_error(res, 503, "outcome_unknown",
               "the database went away while committing: this may or may not have been "
               "done; retry with the same Idempotency-Key to get its outcome");
    http_add_header(res, "Retry-After", "1");
}

void answer_write_error(http_res *res, int rc, const db_conn *c)
{
    if (db_in_doubt(c))
        answer_outcome_unknown(res);
    else
        answer_db_error(res, rc);
}
