#include "lib/config.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>

Test(config, parses_integers_within_bounds)
{
    int64_t v = 0;
    cr_assert_eq(cfg_parse_int("8081", 1, 65535, &v), 0);
    cr_assert_eq(v, 8081);
    cr_assert_eq(cfg_parse_int("-5", -10, 10, &v), 0);
    cr_assert_eq(v, -5);
}

Test(config, rejects_junk_and_out_of_range)
{
    int64_t v = 42;
    cr_assert_eq(cfg_parse_int("", 0, 10, &v), -EINVAL);
    cr_assert_eq(cfg_parse_int("12abc", 0, 100, &v), -EINVAL);
    cr_assert_eq(cfg_parse_int("1.5", 0, 100, &v), -EINVAL);
    cr_assert_eq(cfg_parse_int("0", 1, 10, &v), -ERANGE);
    cr_assert_eq(cfg_parse_int("99999999999999999999", 0, 10, &v), -ERANGE);
    cr_assert_eq(v, 42, "a failed parse leaves the output alone");
}

Test(config, reads_the_environment_with_defaults)
{
    int64_t v = 0;
    unsetenv("SHOP_TEST_SETTING");
    cr_assert_eq(cfg_int("SHOP_TEST_SETTING", 1, 10, 7, &v), 0);
    cr_assert_eq(v, 7);
    setenv("SHOP_TEST_SETTING", "9", 1);
    cr_assert_eq(cfg_int("SHOP_TEST_SETTING", 1, 10, 7, &v), 0);
    cr_assert_eq(v, 9);
    setenv("SHOP_TEST_SETTING", "11", 1);
    cr_assert_lt(cfg_int("SHOP_TEST_SETTING", 1, 10, 7, &v), 0);
    cr_assert_str_eq(cfg_str("SHOP_TEST_UNSET", "dflt"), "dflt");
    setenv("SHOP_TEST_EMPTY", "", 1);
    cr_assert_str_eq(cfg_str("SHOP_TEST_EMPTY", "dflt"), "dflt", "empty counts as unset");
}
