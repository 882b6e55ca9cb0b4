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
