/* What another user of the same machine can reach: the database asks for a
 * password (SCRAM) that only the owner of the checkout can read, and the
 * data folders are private. */
#include "harness.h"

#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *var_path(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", getenv("SHOP_VAR"), name);
    return out;
}

Test(local_access, the_database_refuses_a_client_without_the_password)
{
    /* Criterion runs each test in its own process: the change stays here. */
    setenv("PGPASSFILE", "/nonexistent", 1);
    PGconn *db = PQconnectdb(getenv("PAYMENTS_DATABASE_URL"));
    cr_assert_neq(PQstatus(db), CONNECTION_OK, "connected without a password");
    cr_assert(strstr(PQerrorMessage(db), "password"), "%s", PQerrorMessage(db));
    PQfinish(db);

    char url[512];
    snprintf(url, sizeof url, "%s?password=guess", getenv("PAYMENTS_DATABASE_URL"));
    db = PQconnectdb(url);
    cr_assert_neq(PQstatus(db), CONNECTION_OK, "connected with a wrong password");
    cr_assert(strstr(PQerrorMessage(db), "password authentication failed"), "%s",
              PQerrorMessage(db));
    PQfinish(db);
}

Test(local_access, the_password_and_the_data_are_private)
{
    char path[PATH_MAX];
    struct stat st;
    const char *files[] = {"pg-password", "pgpass"};
    for (size_t i = 0; i < 2; i++) {
        cr_assert_eq(stat(var_path(path, sizeof path, files[i]), &st), 0, "%s", path);
        cr_assert_eq(st.st_mode & 077, 0, "%s is mode %o", path, st.st_mode & 0777);
    }
    /* var/pg and var/kafka, or the fresh private folders they link to. */
    const char *dirs[] = {"pg", "kafka"};
    for (size_t i = 0; i < 2; i++) {
        char real[PATH_MAX];
        cr_assert(realpath(var_path(path, sizeof path, dirs[i]), real), "%s", path);
        cr_assert_eq(stat(real, &st), 0);
        cr_assert_eq(st.st_mode & 077, 0, "%s is mode %o", real, st.st_mode & 0777);
        if (strncmp(real, "/var/tmp/", 9) == 0) /* mktemp's name: not guessable */
            cr_assert_eq(strlen(strrchr(real, '.')), 11, "%s", real);
    }
}
