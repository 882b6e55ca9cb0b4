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
    cr_assert_eq(db_classify("22P02", false), -DB_FAILED, "bad data may be one message's");
    cr_assert_eq(db_classify("23503", false), -DB_FAILED);
}

/* What no message's data can cause is waited out, never set aside: a
 * function or column renamed (42883, 42703), a privilege revoked (42501),
 * a syntax error (42601: a bug, in every message alike), not supported
 * (0A000), a full NOTIFY queue (54000), an object in use (55006), a disk or
 * internal error (58030, XX000, XX001), a bad configuration (F0000), the
 * database or schema gone (3D000, 3F000), the role refused (28000). */
Test(db, sqlstates_no_message_can_cause_are_systemic_and_retried)
{
    const char *systemic[] = {"42883", "42703", "42501", "42601", "0A000",
                              "54000", "55006", "58030", "XX000", "XX001",
                              "F0000", "3D000", "3F000", "28000", NULL};
    for (int i = 0; systemic[i]; i++) {
        cr_assert_eq(db_classify(systemic[i], false), -DB_SYSTEMIC, "%s", systemic[i]);
        cr_assert(db_transient(db_classify(systemic[i], false)), "%s is retried", systemic[i]);
    }
    cr_assert_not(db_transient(-DB_FAILED));
    cr_assert_not(db_transient(-DB_UNIQUE));
}

/* A cluster's URL names every node; the pool walks them itself. */
Test(db, a_clusters_nodes_are_read_from_its_url)
{
    db_hosts h;
    cr_assert_eq(db_hosts_parse("postgresql://shop@127.0.0.1:54320,127.0.0.1:54321,10.0.0.3:5433/"
                                "orders?target_session_attrs=read-write",
                                &h),
                 0);
    cr_assert_eq(h.n, 3);
    cr_assert_str_eq(h.host[0], "127.0.0.1");
    cr_assert_str_eq(h.port[0], "54320");
    cr_assert_str_eq(h.port[1], "54321");
    cr_assert_str_eq(h.host[2], "10.0.0.3");
    cr_assert_str_eq(h.port[2], "5433");

    /* Keyword form, one port for every host. */
    cr_assert_eq(db_hosts_parse("host=a,b port=6000 dbname=x", &h), 0);
    cr_assert_eq(h.n, 2);
    cr_assert_str_eq(h.host[1], "b");
    cr_assert_str_eq(h.port[0], "6000");
    cr_assert_str_eq(h.port[1], "6000");

    /* One server: one node; none named: libpq's default (n 0). */
    cr_assert_eq(db_hosts_parse("postgresql://shop@127.0.0.1:54320/orders", &h), 0);
    cr_assert_eq(h.n, 1);
    cr_assert_eq(db_hosts_parse("dbname=orders", &h), 0);
    cr_assert_eq(h.n, 0);

    /* Not a connection string, or more nodes than we walk: libpq's walk. */
    cr_assert_eq(db_hosts_parse("postgresql://[", &h), -1);
    cr_assert_eq(h.n, 0);
    cr_assert_eq(db_hosts_parse("host=a,b,c,d,e,f,g,h,i port=1", &h), -1);
    cr_assert_eq(h.n, 0);
}
