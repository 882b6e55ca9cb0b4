#include "lib/db.h"

#include <criterion/criterion.h>

Test(db_array, quotes_and_escapes_every_element)
{
    db_array a;
    db_array_begin(&a);
    db_array_add(&a, "plain");
    db_array_add(&a, "{\"type\":\"x\"}");
    db_array_add(&a, "back\\slash, comma");
    db_array_add(&a, "");
    db_array_end(&a);
    cr_assert_str_eq(a.text,
                     "{\"plain\",\"{\\\"type\\\":\\\"x\\\"}\",\"back\\\\slash, comma\",\"\"}");
    cr_assert_eq(a.n, 4);
    db_array_free(&a);

    db_array_begin(&a);
    db_array_end(&a);
    cr_assert_str_eq(a.text, "{}");
    db_array_free(&a);
}

/* What passes with time is retried (a consumer waits it out, an API answers
 * 503); what does not is an error for good. */
Test(db, sqlstates_that_pass_with_time_are_retried)
{
    const char *transient[] = {"08006", "57P01", "57P03", "53300", "53100", "57014", "25006", NULL};
    for (int i = 0; transient[i]; i++)
        cr_assert_eq(db_classify(transient[i], false), -DB_UNAVAILABLE, "%s", transient[i]);
    cr_assert_eq(db_classify("", false), -DB_UNAVAILABLE, "no SQLSTATE: no server answer");
    cr_assert_eq(db_classify("42601", true), -DB_UNAVAILABLE, "the connection is gone");
    cr_assert_eq(db_classify("40001", false), -DB_CONFLICT);
    cr_assert_eq(db_classify("40P01", false), -DB_CONFLICT);
    cr_assert_eq(db_classify("55P03", false), -DB_CONFLICT);
    cr_assert_eq(db_classify("23505", false), -DB_UNIQUE);
    cr_assert_eq(db_classify("23514", false), -DB_CHECK);
    cr_assert_eq(db_classify("22003", false), -DB_RANGE);
    cr_assert_eq(db_classify("42601", false), -DB_FAILED, "a syntax error is a bug");
    cr_assert_eq(db_classify("22P02", false), -DB_FAILED);
}
