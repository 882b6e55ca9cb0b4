/* The outbox relay's rule for a round (lib/outbox.h): only the rows the
 * broker acknowledged are deleted. The relay itself runs against the real
 * PostgreSQL and Kafka (tests/integration/test_kafka_roundtrip.c). */
#include "lib/outbox.h"

#include <criterion/criterion.h>

/* A claimed round's rows as libpq hands them over, made without a server
 * (libpq's own PQmakeEmptyPGresult and PQsetvalue). */
static PGresult *claimed(const char *const *ids, int n)
{
    PGresult *r = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc id = {.name = "id", .format = 0, .typid = 20 /* int8 */, .typlen = 8};
    cr_assert(PQsetResultAttrs(r, 1, &id));
    for (int i = 0; i < n; i++)
        cr_assert(PQsetvalue(r, i, 0, (char *)ids[i], (int)strlen(ids[i])));
    return r;
}

Test(outbox, only_acknowledged_rows_are_deleted)
{
    const char *ids[] = {"11", "12", "13", "14", "15"};
    PGresult *rows = claimed(ids, 5);
    /* 12 failed, 14 was refused by the producer, 15 never reported. */
    int outcome[] = {1, -1, 1, -1, 0};
    db_array del;
    cr_assert_eq(outbox_acknowledged(rows, outcome, 5, &del), 2);
    cr_assert_str_eq(del.text, "{\"11\",\"13\"}");
    db_array_free(&del);
    PQclear(rows);
}

Test(outbox, a_round_the_broker_refused_deletes_nothing)
{
    const char *ids[] = {"7", "8"};
    PGresult *rows = claimed(ids, 2);
    int outcome[] = {-1, -1};
    db_array del;
    cr_assert_eq(outbox_acknowledged(rows, outcome, 2, &del), 0);
    cr_assert_str_eq(del.text, "{}");
    db_array_free(&del);
    PQclear(rows);
}

/* A row's traceparent: the writer's context, or "" (NULL in the table)
 * when it is in no trace. */
Test(outbox, a_row_keeps_its_writers_context_or_none)
{
    char tp[TRACE_PARENT_LEN + 1];
    outbox_traceparent(NULL, tp);
    cr_assert_str_eq(tp, "");
    trace_ctx none = {0};
    outbox_traceparent(&none, tp);
    cr_assert_str_eq(tp, "", "a context without ids is none");
    trace_ctx ctx;
    const char *given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    cr_assert_eq(trace_parse(given, &ctx), 0);
    outbox_traceparent(&ctx, tp);
    cr_assert_str_eq(tp, given);
}
