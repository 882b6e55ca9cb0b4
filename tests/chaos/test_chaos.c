/* Failure drills against the running test stack: the broker lost with
 * messages in flight, and services killed with SIGKILL mid-burst. After
 * each, every accepted order must end FINISHED or CANCELLED and the money
 * must add up. */
#include "../integration/harness.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

Test(chaos, broker_lost_with_messages_in_flight_heals, .timeout = 180)
{
    char user[64];
    unique_name(user, sizeof user, "brokerloss");
    account_with(user, 250);
    int accepted = 0;
    for (int i = 0; i < 30; i++)
        accepted += place_order(user, 10, NULL) == 201;
    /* Down at once: requests and results are still in the outboxes, in the
     * broker, or in the consumers' hands; the new broker knows none. */
    cr_assert_eq(stack("broker-stop"), 0);
    for (int i = 0; i < 10; i++)
        accepted += place_order(user, 10, NULL) == 201;
    cr_assert_eq(accepted, 40, "orders are accepted while the broker is down");
    cr_assert_eq(stack("broker-start"), 0);

    cr_assert(all_final(user, 120000), "orders still NEW after the broker came back");
    cr_assert_eq(orders_with(user, "FINISHED"), 25);
    cr_assert_eq(orders_with(user, "CANCELLED"), 15);
    assert_money_adds_up(user);
}

typedef struct burst {
    const char *user;
    int orders;
    atomic_int accepted;
    atomic_bool done;
} burst;

static void *place_many(void *arg)
{
    burst *b = arg;
    for (int i = 0; i < b->orders; i++)
        if (place_order(b->user, 10, NULL) == 201)
            atomic_fetch_add(&b->accepted, 1);
    atomic_store(&b->done, true);
    return NULL;
}

static bool accepted_at_least(void *arg)
{
    burst *b = arg;
    return atomic_load(&b->accepted) >= 40 || atomic_load(&b->done);
}

static void kill_mid_burst(const char *service)
{
    char user[64], cmd[64];
    unique_name(user, sizeof user, service);
    account_with(user, 500);
    burst b = {.user = user, .orders = 100};
    pthread_t th;
    pthread_create(&th, NULL, place_many, &b);
    cr_assert(wait_until(accepted_at_least, &b, 60000));
    snprintf(cmd, sizeof cmd, "kill %s", service);
    cr_assert_eq(stack(cmd), 0);
    cr_assert_eq(stack("up >/dev/null"), 0, "the stack restarts the killed service");
    pthread_join(th, NULL);

    int accepted = atomic_load(&b.accepted);
    cr_assert_geq(accepted, 40);
    cr_assert(all_final(user, 120000), "orders still NEW after %s was killed", service);
    int64_t finished = orders_with(user, "FINISHED");
    cr_assert_eq(finished, accepted < 50 ? accepted : 50, "%d accepted, %lld finished", accepted,
                 (long long)finished);
    cr_assert_eq(orders_with(user, "CANCELLED"), accepted - finished);
    assert_money_adds_up(user);
}

Test(chaos, payments_killed_mid_burst_loses_nothing, .timeout = 240)
{
    kill_mid_burst("payments");
}

Test(chaos, orders_killed_mid_burst_loses_nothing, .timeout = 240)
{
    kill_mid_burst("orders");
}
