/* The three-node drill, against a stack whose Kafka is a cluster of three
 * KRaft nodes (KAFKA_NODES=3: topics with three replicas, two in sync for a
 * write to count). A node is SIGKILLed mid-burst and started again, then
 * another: orders keep being accepted and paid throughout, none is lost,
 * none is debited twice. The longest pause between two payments is printed
 * (and bounded: leadership moves within the broker session timeout). */
#include "../integration/harness.h"
#include "lib/clock.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

/* A client placing orders at a steady pace until told to stop. */
typedef struct steady {
    const char *user;
    atomic_int accepted, refused;
    atomic_bool stop;
} steady;

/* One order as a careful client places it: with an Idempotency-Key, and
 * again with the same key after an answer that says "retry" (a 503, or none
 * within the client's timeout: two cores restarting a JVM beside three
 * sanitized services can make PostgreSQL late). Returns the last status. */
static long place_with_retries(const char *user)
{
    char key[48], header[80];
    random_uuid(key);
    snprintf(header, sizeof header, "Idempotency-Key: %s", key);
    const char *headers[] = {header, NULL};
    char body[160];
    snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"amount\":1,\"description\":\"test\"}", user);
    long status = 0;
    for (int attempt = 0; attempt < 5; attempt++) {
        resp r;
        status = api(&r, "POST", orders_url(), "/orders", body, headers) == 0 ? r.status : 0;
        if (status != 0 && status != 503) {
            resp_free(&r);
            break;
        }
        fprintf(stderr,
                "three-node drill: %.3f s: an order answered %ld (%s); retried with its key\n",
                clock_wall_ms() / 1000.0, status, status ? err_code(&r) : r.error);
        resp_free(&r);
        usleep(200 * 1000);
    }
    return status;
}

static void *place_steadily(void *arg)
{
    steady *s = arg;
    while (!atomic_load(&s->stop)) {
        if (place_with_retries(s->user) == 201)
            atomic_fetch_add(&s->accepted, 1);
        else
            atomic_fetch_add(&s->refused, 1);
        usleep(20 * 1000);
    }
    return NULL;
}

typedef struct accepted_wait {
    steady *s;
    int target;
} accepted_wait;

static bool accepted_reached(void *arg)
{
    accepted_wait *w = arg;
    return atomic_load(&w->s->accepted) >= w->target;
}

/* Waits until `more` orders were accepted after now. */
static void let_orders_come(steady *s, int more)
{
    accepted_wait w = {.s = s, .target = atomic_load(&s->accepted) + more};
    cr_assert(wait_until(accepted_reached, &w, 60000), "orders stopped being accepted");
}

Test(cluster, a_node_killed_mid_burst_then_another_loses_nothing, .timeout = 400)
{
    char user[64];
    unique_name(user, sizeof user, "cluster");
    account_with(user, 100000);
    steady s = {.user = user};
    pthread_t th;
    pthread_create(&th, NULL, place_steadily, &s);
    int64_t t0 = clock_now_ms();
    let_orders_come(&s, 30);

    const char *victims[] = {"kafka", "kafka-2"};
    for (size_t i = 0; i < sizeof victims / sizeof *victims; i++) {
        char cmd[64];
        snprintf(cmd, sizeof cmd, "kill %s", victims[i]);
        cr_assert_eq(stack(cmd), 0, "%s", cmd);
        /* Two nodes of three: every partition still has a leader and two
         * replicas in sync once leadership moved. */
        let_orders_come(&s, 100);
        cr_assert_eq(stack("up >/dev/null"), 0, "the killed node starts again");
        let_orders_come(&s, 60);
    }
    atomic_store(&s.stop, true);
    pthread_join(th, NULL);

    cr_assert_eq(atomic_load(&s.refused), 0, "an order was refused while a node was down");
    cr_assert(all_final(user, 180000), "orders still NEW after the nodes came back");
    int accepted = atomic_load(&s.accepted);
    cr_assert_eq(orders_with(user, "FINISHED"), accepted);
    assert_money_adds_up(user);

    /* The longest wait between two debits of the drill, from the payments
     * database's own clock. */
    PGconn *p = payments_db();
    int64_t pause_ms = db_int(p,
                              "SELECT coalesce(max(gap), 0)::bigint FROM (SELECT extract(epoch FROM"
                              " created_at - lag(created_at) OVER (ORDER BY created_at)) * 1000"
                              " AS gap FROM ledger WHERE user_id = $1 AND kind = 'debit') g",
                              user, NULL);
    PQfinish(p);
    cr_log_info("three-node drill: %d orders in %.0f s, all paid; longest pause between two "
                "payments %lld ms",
                accepted, (clock_now_ms() - t0) / 1000.0, (long long)pause_ms);
    fprintf(stderr, "three-node drill: longest pause between two payments: %lld ms\n",
            (long long)pause_ms);
    cr_assert_lt(pause_ms, 60000, "payments stalled for %lld ms", (long long)pause_ms);
}
