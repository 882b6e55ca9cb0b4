#include "lib/valid.h"

#include <criterion/criterion.h>
#include <string.h>

Test(valid, user_ids)
{
    cr_assert(valid_user_id("alice"));
    cr_assert(valid_user_id("A.b_c-9"));
    char longest[65];
    memset(longest, 'x', 64);
    longest[64] = '\0';
    cr_assert(valid_user_id(longest));

    char too_long[66];
    memset(too_long, 'x', 65);
    too_long[65] = '\0';
    cr_assert_not(valid_user_id(too_long));
    cr_assert_not(valid_user_id(""));
    cr_assert_not(valid_user_id("al ice"));
    cr_assert_not(valid_user_id("alice/../bob"));
    cr_assert_not(valid_user_id("al\xc3\xafce"));
}

Test(valid, amounts)
{
    cr_assert(valid_amount(1));
    cr_assert(valid_amount(1000000000000LL));
    cr_assert_not(valid_amount(0));
    cr_assert_not(valid_amount(-1));
    cr_assert_not(valid_amount(1000000000001LL));
}

Test(valid, idempotency_keys)
{
    cr_assert(valid_idempotency_key("3f1c-uuid-like:key"));
    cr_assert_not(valid_idempotency_key(""));
    cr_assert_not(valid_idempotency_key("has space"));
    cr_assert_not(valid_idempotency_key("tab\there"));
    char too_long[300];
    memset(too_long, 'k', 256);
    too_long[256] = '\0';
    cr_assert_not(valid_idempotency_key(too_long));
}

Test(valid, utf8_repair_keeps_good_text_and_replaces_each_bad_byte)
{
    char good[] = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 plain";
    cr_assert_eq(valid_utf8_repair(good), 0);
    cr_assert_str_eq(good, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 plain");

    char bad[] = "/orders/\xff\xfe x \xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 \xe2\x82";
    cr_assert_eq(valid_utf8_repair(bad), 13);
    cr_assert_str_eq(bad, "/orders/?? x ?? ??? ???? ??");
}
