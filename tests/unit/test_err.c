#include "lib/err.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

Test(err, names_every_code_of_ours_and_every_errno)
{
    cr_assert_str_eq(err_str(0), "ok");
    cr_assert_str_eq(err_str(-DB_UNAVAILABLE), "database unavailable");
    cr_assert_str_eq(err_str(-AUTH_EXPIRED), "token expired");
    cr_assert_str_eq(err_str(-EINVAL), "Invalid argument");
    cr_assert_str_eq(err_str(-ERR_END), "unknown error");
    /* Ours never meet an errno, and each has words of its own. */
    for (int code = DB_UNAVAILABLE; code < ERR_END; code++) {
        cr_assert_geq(code, ERR_BASE);
        if ((code > DB_REFUSED && code < AUTH_MALFORMED))
            continue;
        cr_assert_str_neq(err_str(-code), "unknown error", "code %d", code);
    }
    cr_assert_gt(ERR_BASE, 133, "errno's largest on Linux is EHWPOISON, 133");
}
