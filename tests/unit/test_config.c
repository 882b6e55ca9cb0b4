#include "lib/config.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
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

typedef struct test_values {
    int64_t n;
    const char *s;
} test_values;

static const cfg_setting test_list[] = {
    CFG_I("SHOP_TEST_SETTING", test_values, n, 1, 10, 7, "a number"),
    CFG_S("SHOP_TEST_TEXT", test_values, s, "dflt", "a string"),
};
static const cfg_table test_table = CFG_TABLE("test", test_list);

Test(config, a_table_reads_the_environment_with_defaults)
{
    test_values v = {0};
    unsetenv("SHOP_TEST_SETTING");
    unsetenv("SHOP_TEST_TEXT");
    cr_assert_eq(cfg_load(&test_table, &v), 0);
    cr_assert_eq(v.n, 7);
    cr_assert_str_eq(v.s, "dflt");
    setenv("SHOP_TEST_SETTING", "9", 1);
    setenv("SHOP_TEST_TEXT", "given", 1);
    cr_assert_eq(cfg_load(&test_table, &v), 0);
    cr_assert_eq(v.n, 9);
    cr_assert_str_eq(v.s, "given");
    setenv("SHOP_TEST_SETTING", "11", 1);
    cr_assert_eq(cfg_load(&test_table, &v), -ERANGE);
    cr_assert_eq(v.n, 7, "a bad value leaves the default");
    setenv("SHOP_TEST_SETTING", "x", 1);
    cr_assert_eq(cfg_load(&test_table, &v), -EINVAL);
    setenv("SHOP_TEST_TEXT", "", 1);
    unsetenv("SHOP_TEST_SETTING");
    cr_assert_eq(cfg_load(&test_table, &v), 0);
    cr_assert_str_eq(v.s, "dflt", "empty counts as unset");
}

Test(config, help_lists_every_setting_with_its_range_and_default)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    const cfg_table *tables[] = {&test_table, NULL};
    cfg_print_help(out, tables, 1);
    fclose(out);
    cr_assert_str_eq(text, "SHOP_TEST_SETTING\t7\t1-10\ttest\ta number\n"
                           "SHOP_TEST_TEXT\tdflt\t\ttest\ta string\n");
    free(text);
}
