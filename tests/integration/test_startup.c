/* A service started with a wrong database setting says so and exits at
 * once, non-zero (issue 24): it used to log "database unreachable;
 * retrying" every second for ever. A server that does not answer is still
 * waited for (chaos::every_part_killed_then_up_heals_and_keeps_the_data). */
#include "harness.h"
#include "lib/clock.h"

#include <criterion/criterion.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Runs the payments binary with PAYMENTS_DATABASE_URL=url for at most
 * 10 s; returns its exit status (-1: still running, then killed) and its
 * output in out. */
static int run_payments_with(const char *url, char *out, size_t len)
{
    const char *build = getenv("SHOP_BUILD"), *key = getenv("AUTH_KEY_FILE"),
               *http = getenv("PAYMENTS_PORT");
    cr_assert(build && key && http,
              "scripts/test.sh sets SHOP_BUILD, AUTH_KEY_FILE, PAYMENTS_PORT");
    char bin[512], pub[512], port[16];
    snprintf(bin, sizeof bin, "%s/bin/payments", build);
    snprintf(pub, sizeof pub, "%s.pub", key);
    snprintf(port, sizeof port, "%d", atoi(http) + 40); /* never reached: it stops before */
    /* The environment the child gets, made before the fork (nothing but
     * async-signal-safe calls after it). */
    static char db[512], key_env[600], port_env[32], pgpass[600];
    snprintf(pgpass, sizeof pgpass, "PGPASSFILE=%s",
             getenv("PGPASSFILE") ? getenv("PGPASSFILE") : "");
    snprintf(db, sizeof db, "PAYMENTS_DATABASE_URL=%s", url);
    snprintf(key_env, sizeof key_env, "AUTH_PUBLIC_KEY_FILE=%s", pub);
    snprintf(port_env, sizeof port_env, "HTTP_PORT=%s", port);
    char *env[] = {db,     key_env, port_env, "ASAN_OPTIONS=detect_leaks=0", "LOG_LEVEL=info",
                   pgpass, NULL};
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    /* The child never asserts: Criterion's messages come from the test's
     * own process only. */
    if (pid == 0) {
        dup2(fds[1], 1), dup2(fds[1], 2);
        close(fds[0]), close(fds[1]);
        execle(bin, bin, (char *)NULL, env);
        _exit(127);
    }
    cr_assert_neq(pid, -1);
    close(fds[1]);
    size_t used = 0;
    int64_t deadline = clock_now_ms() + 10000;
    for (;;) {
        int64_t left = deadline - clock_now_ms();
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            break;
        ssize_t n = read(fds[0], out + used, len - 1 - used);
        if (n <= 0)
            break;
        used += (size_t)n;
        if (used == len - 1)
            break;
    }
    out[used] = '\0';
    close(fds[0]);
    /* The pipe's end comes as the process closes its files, a moment
     * before it can be waited for. */
    int status;
    pid_t done;
    while ((done = waitpid(pid, &status, WNOHANG)) == 0 && clock_now_ms() < deadline) {
        struct timespec pause = {.tv_nsec = 10 * 1000000};
        nanosleep(&pause, NULL);
    }
    if (done == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

Test(startup, a_wrong_database_password_or_name_exits_at_once_naming_the_setting, .timeout = 60)
{
    const char *port = getenv("PG_PORT");
    cr_assert_not_null(port);
    char url[256], out[16384];
    snprintf(url, sizeof url, "postgresql://shop:not-the-password@127.0.0.1:%s/payments", port);
    int64_t t0 = clock_now_ms();
    int status = run_payments_with(url, out, sizeof out);
    cr_assert(status > 0, "payments did not exit on a wrong password (status %d): %s", status, out);
    cr_assert_lt(clock_now_ms() - t0, 5000, "it took %lld ms", (long long)(clock_now_ms() - t0));
    cr_assert(strstr(out, "PAYMENTS_DATABASE_URL"), "the setting is not named: %s", out);
    cr_assert(strstr(out, "password authentication failed"), "%s", out);
    cr_assert_null(strstr(out, "retrying"), "%s", out);

    snprintf(url, sizeof url, "postgresql://shop@127.0.0.1:%s/no_such_database", port);
    status = run_payments_with(url, out, sizeof out);
    cr_assert(status > 0, "payments did not exit on a wrong database (status %d): %s", status, out);
    cr_assert(strstr(out, "PAYMENTS_DATABASE_URL") && strstr(out, "does not exist"), "%s", out);

    status = run_payments_with("postgresql://shop@127.0.0.1:notaport/payments", out, sizeof out);
    cr_assert(status > 0, "payments did not exit on an unreadable URL (status %d): %s", status,
              out);
    cr_assert(strstr(out, "PAYMENTS_DATABASE_URL"), "%s", out);
}
