/* Failure drills against the running test stack and its Apache Kafka
 * node: the broker killed, frozen and wiped with messages in flight,
 * services killed with SIGKILL mid-burst, a consumer-group rebalance, the
 * database down. After each, every accepted order must end FINISHED or
 * CANCELLED and the money must add up across both databases.
 *
 * Each drill strikes while work is provably in flight (it asserts orders
 * still NEW, or rows still in the outbox, at the moment of the failure),
 * and every instance that owns the partitions in play is hit. Re-drive is
 * off for this suite (scripts/test.sh starts orders with an hour's
 * REDRIVE_AFTER_MS): a message acknowledged and then dropped leaves its
 * order NEW for ever and fails the drill, instead of being healed within
 * seconds; each drill also asserts that none of its orders needed one. The
 * drill about the broker's lost data turns re-drive on for itself, and
 * asserts it was needed. */
#include "../integration/harness.h"

#include "lib/clock.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Whatever a drill did, everything runs again after it: the database, and
 * whatever it froze or killed (a failed assertion leaves it mid-way). */
static void everything_back(void)
{
    stack("pg-start >/dev/null");
    stack("thaw-every payments 2>/dev/null");
    stack("thaw kafka 2>/dev/null");
    stack("up >/dev/null");
}

/* The re-drive settings orders ran with before a drill changed them. */
static char redrive_before[32];

static void redrive_restored(void)
{
    everything_back();
    setenv("REDRIVE_AFTER_MS", redrive_before, 1);
    stack("restart orders >/dev/null");
}

static void accepted_wait_until(burst *b, int n);

typedef struct in_broker_wait {
    const char *user;
    int64_t n;
} in_broker_wait;

/* At least n of the user's requests have left orders' outbox: the broker
 * acknowledged them. */
static bool in_broker(void *arg)
{
    in_broker_wait *w = arg;
    PGconn *db = orders_db();
    int64_t sent = db_int(db,
                          "SELECT (SELECT count(*) FROM orders WHERE user_id = $1)"
                          "     - (SELECT count(*) FROM outbox WHERE key = $1)",
                          w->user, NULL);
    PQfinish(db);
    return sent >= w->n;
}

Test(chaos, broker_data_lost_is_healed_by_redrive, .timeout = 240, .fini = redrive_restored)
{
    char user[64];
    const char *was = getenv("REDRIVE_AFTER_MS");
    snprintf(redrive_before, sizeof redrive_before, "%s", was ? was : "5000");
    setenv("REDRIVE_AFTER_MS", "1000", 1);
    cr_assert_eq(stack("restart orders >/dev/null"), 0, "orders restarted with re-drive on");
    unique_name(user, sizeof user, "brokerwipe");
    account_with(user, 250);
    /* Requests in the broker's log that nobody has read yet (payments
     * frozen), and a burst still placing orders when the disk goes. */
    cr_assert_eq(stack("freeze-every payments"), 0);
    burst b = {.user = user, .orders = 40, .amount = 10};
    pthread_t th;
    pthread_create(&th, NULL, place_orders, &b);
    accepted_wait_until(&b, 10);
    cr_assert(at_least_new(user, 10, 10000), "no request in flight when the broker's disk went");
    /* Some of them in the broker's log, not only in the outbox (a relay
     * that has just connected, with its SASL handshake, may not have sent
     * any yet): those are what the disk takes with it. */
    in_broker_wait iw = {user, 5};
    cr_assert(wait_until(in_broker, &iw, 20000),
              "no request reached the broker before its disk went");
    /* The broker's disk lost at once (SIGKILL, then its data deleted):
     * requests and results still in the outboxes, in the log, or in the
     * consumers' hands; the broker that comes back is empty, committed
     * offsets included. */
    cr_assert_eq(stack("broker-wipe"), 0);
    cr_assert_eq(stack("thaw-every payments"), 0);
    cr_assert_eq(stack("broker-start"), 0);
    pthread_join(th, NULL);
    cr_assert_eq(atomic_load(&b.accepted), 40, "orders are accepted while the broker is down");

    cr_assert(all_final(user, 120000), "orders still NEW after the broker came back empty");
    cr_assert_eq(orders_with(user, "FINISHED"), 25);
    cr_assert_eq(orders_with(user, "CANCELLED"), 15);
    cr_assert_gt(redrives_of(user), 0, "the lost requests were healed without a re-drive?");
    assert_money_adds_up(user);
}

static bool accepted_at_least(void *arg)
{
    burst *b = arg;
    return atomic_load(&b->accepted) >= 40 || atomic_load(&b->done);
}

/* Starts a client placing b's orders and returns once 40 are accepted:
 * the failure that follows strikes mid-burst. */
static pthread_t burst_under_way(burst *b)
{
    pthread_t th;
    pthread_create(&th, NULL, place_orders, b);
    cr_assert(wait_until(accepted_at_least, b, 60000), "the burst did not get going");
    return th;
}

typedef struct accepted_wait {
    burst *b;
    int n;
} accepted_wait;

static bool accepted_n(void *arg)
{
    accepted_wait *w = arg;
    return atomic_load(&w->b->accepted) >= w->n || atomic_load(&w->b->done);
}

/* Waits until the burst has n orders accepted. */
static void accepted_wait_until(burst *b, int n)
{
    accepted_wait w = {b, n};
    cr_assert(wait_until(accepted_n, &w, 60000), "the burst never had %d orders accepted", n);
    cr_assert_geq(atomic_load(&b->accepted), n, "the burst ended with fewer than %d accepted", n);
}

/* `target` (every instance of a service, or the broker) killed with
 * SIGKILL mid-burst while payments has work in hand: its instances are
 * frozen while the burst's first orders pile up (asserted NEW), then
 * thawed an instant before the kill, so that the kill finds them deciding,
 * the results on their way and orders' consumers applying them, while the
 * burst goes on. With `cancel_every` N, every Nth order is cancelled as soon
 * as it is placed, so that cancels race their payments through the kill. */
static bool refunds_asked(void *arg)
{
    const burst *b = arg;
    return atomic_load(&b->refunds_taken) > 0;
}

static void kill_mid_burst(const char *target, int cancel_every, int refund_every)
{
    char user[64], cmd[64];
    unique_name(user, sizeof user, "killed");
    account_with(user, 500);
    cr_assert_eq(stack("freeze-every payments"), 0);
    burst b = {.user = user,
               .orders = 100,
               .amount = 10,
               .cancel_every = cancel_every,
               .refund_every = refund_every};
    pthread_t th = burst_under_way(&b);
    cr_assert(at_least_new(user, 10, 10000), "no work in flight when %s was killed", target);
    cr_assert_eq(stack("thaw-every payments"), 0);
    if (refund_every) /* refunds on their way when the kill comes */
        cr_assert(wait_until(refunds_asked, &b, 30000), "no refund was asked for");
    snprintf(cmd, sizeof cmd, "%s", target);
    cr_assert_eq(stack(cmd), 0, "%s", cmd);
    cr_assert_eq(stack("up >/dev/null"), 0, "the stack restarts what was killed");
    pthread_join(th, NULL);

    int accepted = atomic_load(&b.accepted);
    cr_assert_geq(accepted, 40);
    cr_assert(all_final(user, 120000), "orders still NEW or refunds PENDING after %s was killed",
              target);
    int64_t finished = orders_with(user, "FINISHED"), cancelled = orders_with(user, "CANCELLED");
    /* An order committed just before the kill may have lost its answer:
     * the one client thread saw at most one such order. */
    int64_t placed = finished + cancelled;
    cr_assert(placed == accepted || placed == accepted + 1, "%d accepted, %lld placed", accepted,
              (long long)placed);
    /* What the account could pay for: 500, and each refund's 5 back. */
    int64_t affordable = (500 + atomic_load(&b.refunds_taken) * (b.amount / 2)) / b.amount;
    if (cancel_every) {
        /* A cancelled order's money may have been taken and given back
         * meanwhile, and a later order refused for want of it: at most
         * what it could afford paid, each cancel kept, and the books exact. */
        cr_assert_gt(b.cancels_taken, 0, "no cancel was taken");
        cr_assert_leq(finished, placed - b.cancels_taken);
        cr_assert_leq(finished, affordable);
        burst_assert_cancels(&b);
    } else if (refund_every) {
        /* A refund's money may come back after a later order was refused. */
        cr_assert_leq(finished, placed < affordable ? placed : affordable);
        cr_assert_geq(finished, placed < 50 ? placed : 50);
    } else {
        cr_assert_eq(finished, placed < 50 ? placed : 50, "%lld placed, %lld finished",
                     (long long)placed, (long long)finished);
    }
    if (refund_every) {
        cr_assert_gt(atomic_load(&b.refunds_taken), 0, "no refund was taken");
        burst_assert_refunds(&b);
    }
    cr_assert_eq(redrives_of(user), 0, "an order needed a re-drive: a message was dropped");
    assert_money_adds_up(user);
}

Test(chaos, payments_killed_mid_burst_loses_nothing, .timeout = 240, .fini = everything_back)
{
    kill_mid_burst("kill-every payments", 0, 0);
}

Test(chaos, orders_killed_mid_burst_loses_nothing, .timeout = 240, .fini = everything_back)
{
    kill_mid_burst("kill-every orders", 0, 0);
}

Test(chaos, broker_killed_mid_burst_loses_nothing, .timeout = 240, .fini = everything_back)
{
    kill_mid_burst("kill kafka", 0, 0);
}

/* Every fifth order cancelled as soon as it is placed, the first ones
 * while payments is frozen (taken, the request and the cancel both in the
 * broker), and every fourth time half of an earlier paid order refunded;
 * then payments killed while it decides all three. */
Test(chaos, cancels_and_refunds_racing_payments_through_a_payments_kill_cost_nobody_anything,
     .timeout = 240, .fini = everything_back)
{
    kill_mid_burst("kill-every payments", 5, 4);
}

/* Refunds asked for while orders is killed: each client retries with its
 * key until a definite answer, and each refund is made once. */
Test(chaos, refunds_through_an_orders_kill_are_made_once, .timeout = 240, .fini = everything_back)
{
    kill_mid_burst("kill-every orders", 0, 3);
}

typedef struct metric_wait {
    const char *urls, *series;
    int64_t above;
} metric_wait;

static bool metric_above(void *arg)
{
    metric_wait *w = arg;
    return metric_sum(w->urls, w->series) > w->above;
}

Test(chaos, broker_frozen_past_the_timeouts_loses_nothing, .timeout = 240)
{
    char user[64];
    unique_name(user, sizeof user, "frozen");
    account_with(user, 500);
    burst b = {.user = user, .orders = 100, .amount = 10};
    pthread_t th = burst_under_way(&b);
    /* SIGSTOP: connections stay open and nothing answers, unlike a crash.
     * The relays' messages time out (KAFKA_MESSAGE_TIMEOUT_MS) and their
     * rows stay; nothing librdkafka still points at may be freed (the
     * services run under ASan). */
    metric_wait failed = {.urls = orders_urls(), .series = "outbox_publish_failures_total"};
    failed.above = metric_sum(failed.urls, failed.series);
    cr_assert_eq(stack("freeze kafka"), 0);
    /* Orders placed while it is frozen, whatever the burst's pace: the
     * burst alone may have been relayed before the freeze struck. */
    for (int i = 0; i < 10; i++)
        cr_assert_eq(place_order(user, 10, NULL), 201, "an order refused while Kafka is frozen");
    bool timed_out = wait_until(metric_above, &failed, 60000);
    cr_assert_eq(stack("thaw kafka"), 0);
    cr_assert(timed_out, "no delivery failed while the broker was frozen");
    pthread_join(th, NULL);

    cr_assert_eq(atomic_load(&b.accepted), 100, "orders are accepted while the broker is frozen");
    cr_assert(all_final(user, 120000), "orders still NEW after the broker thawed");
    cr_assert_eq(orders_with(user, "FINISHED"), 50);
    cr_assert_eq(orders_with(user, "CANCELLED"), 60);
    cr_assert_eq(redrives_of(user), 0, "an order needed a re-drive: a message was dropped");
    assert_money_adds_up(user);
}

typedef struct partitions_wait {
    const char *url;
    int64_t want, want_max; /* want_max 0: exactly want */
} partitions_wait;

static bool owns(void *arg)
{
    partitions_wait *w = arg;
    int64_t n = metric(w->url, "consumer_assigned_partitions{topic=\"payment.requests\"}");
    return n >= w->want && n <= (w->want_max ? w->want_max : w->want);
}

/* The name and URL of the second payments instance (the test stack runs
 * two: SHOP_PAYMENTS_URLS). */
static void second_payments(char *name, size_t nlen, char *url, size_t ulen)
{
    const char *urls = payments_urls(), *second = strchr(urls, ' ');
    cr_assert_not_null(second, "the test stack runs two payments instances");
    snprintf(url, ulen, "%s", second + 1);
    const char *port = strrchr(url, ':');
    snprintf(name, nlen, "payments-%s", port + 1);
}

/* The second payments member leaves (a clean stop: it leaves the group at
 * once) and the first takes every partition; then it joins again, and
 * they share them. */
static void leave_and_join_again(const char *name)
{
    char cmd[96];
    snprintf(cmd, sizeof cmd, "stop %s", name);
    cr_assert_eq(stack(cmd), 0);
    partitions_wait all = {.url = payments_url(), .want = kafka_partitions()};
    cr_assert(wait_until(owns, &all, 30000), "the other instance did not take every partition");
    cr_assert_eq(stack("up >/dev/null"), 0);
    /* Two members: half each, or one more for one of them when odd. */
    partitions_wait half = {.url = payments_url(),
                            .want = kafka_partitions() / 2,
                            .want_max = (kafka_partitions() + 1) / 2};
    cr_assert(wait_until(owns, &half, 30000), "the partitions were not shared again");
}

Test(chaos, consumer_group_rebalance_mid_burst_loses_nothing, .timeout = 240)
{
    char user[64], name[64], url[128];
    unique_name(user, sizeof user, "rebalance");
    second_payments(name, sizeof name, url, sizeof url);
    account_with(user, 1000);
    burst b = {.user = user, .orders = 150, .amount = 10};
    pthread_t th = burst_under_way(&b);
    leave_and_join_again(name); /* while orders keep coming */
    pthread_join(th, NULL);

    cr_assert_eq(atomic_load(&b.accepted), 150);
    cr_assert(all_final(user, 120000), "orders still NEW after the rebalances");
    cr_assert_eq(orders_with(user, "FINISHED"), 100);
    cr_assert_eq(orders_with(user, "CANCELLED"), 50);
    cr_assert_eq(redrives_of(user), 0, "an order needed a re-drive: a message was dropped");
    assert_money_adds_up(user);
}

#define REPLAYED "payments_total{outcome=\"replayed\"}"

static bool no_lag(void *arg)
{
    return metric(((partitions_wait *)arg)->url, "consumer_lag{topic=\"payment.requests\"}") == 0;
}

/* Offsets go to Kafka at most once a second (CONSUMER_COMMIT_INTERVAL_MS),
 * and at once when partitions are revoked or a consumer stops: so a clean
 * rebalance hands over where the last transaction ended, and the new owner
 * reads nothing again (a crash, unlike this, redelivers up to a second). */
Test(chaos, a_clean_rebalance_reads_nothing_again, .timeout = 120)
{
    char user[64], name[64], url[128];
    unique_name(user, sizeof user, "handover");
    second_payments(name, sizeof name, url, sizeof url);
    account_with(user, 1000);
    burst b = {.user = user, .orders = 40, .amount = 10};
    pthread_join(burst_under_way(&b), NULL);
    cr_assert(all_final(user, 60000));
    int64_t replayed = metric(payments_url(), REPLAYED);
    /* Both members are revoked at each step (eager rebalancing): each
     * commits what it handled, and the new owners start from there. */
    leave_and_join_again(name);
    /* One more order after the handovers, and both members caught up with
     * every partition's end: what would have been read again is read. */
    burst one = {.user = user, .orders = 1, .amount = 10};
    pthread_join(burst_under_way(&one), NULL);
    cr_assert(all_final(user, 60000));
    partitions_wait caught_up[] = {{.url = payments_url()}, {.url = url}};
    for (int i = 0; i < 2; i++)
        cr_assert(wait_until(no_lag, &caught_up[i], 30000), "a member never caught up");
    cr_assert_eq(metric(payments_url(), REPLAYED), replayed, "requests were read again");
    cr_assert_eq(metric(url, REPLAYED), 0, "the restarted member read requests again");
    cr_assert_eq(orders_with(user, "FINISHED"), 41);
    assert_money_adds_up(user);
}

static int64_t dead_letters(PGconn *(*connect)(void))
{
    PGconn *db = connect();
    int64_t n = db_int(db, "SELECT count(*) FROM dead_letters", NULL, NULL);
    PQfinish(db);
    return n;
}

#define RETRIES "consumer_retries_total{topic=\"payment.requests\"}"

/* The database goes while payments holds requests it cannot record: 30
 * orders exist, their requests reach payments only once the database is
 * down (sent then, as the relay had them in flight), payments retries them
 * (asserted), and is then killed with SIGKILL in the middle of retrying.
 * Nothing it held was acknowledged to Kafka, so its successors read it all
 * again once the database is back: every order ends as it should, with no
 * re-drive (off in this suite) and no dead letter. */
Test(chaos, database_down_mid_flow_is_retried_not_dropped, .timeout = 240, .fini = everything_back)
{
    enum { N = 30 };
    char user[64], ids[N][37];
    unique_name(user, sizeof user, "dbdown");
    account_with(user, 200);
    for (int i = 0; i < N; i++)
        insert_order(user, 10, ids[i]);
    int64_t dead_before = dead_letters(payments_db) + dead_letters(orders_db);
    int64_t retries = metric_sum(payments_urls(), RETRIES);
    /* Both databases live in one cluster: both services lose theirs. */
    cr_assert_eq(stack("pg-stop"), 0);
    inject_requests((const char(*)[37])ids, N, user, 10);
    metric_wait retried = {.urls = payments_urls(), .series = RETRIES, .above = retries};
    cr_assert(wait_until(metric_above, &retried, 30000),
              "payments never retried the requests it held");
    resp r;
    char body[128];
    snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"amount\":10}", user);
    api(&r, "POST", orders_url(), "/orders", body, NULL);
    cr_assert_eq(r.status, 503, "orders answers 503 without its database: %s", r.body);
    cr_assert_lt(r.seconds, 1.0);
    resp_free(&r);
    cr_assert_eq(stack("kill-every payments"), 0);
    cr_assert_eq(stack("pg-start"), 0);
    cr_assert_eq(stack("up >/dev/null"), 0);

    cr_assert(all_final(user, 120000), "orders still NEW after the database came back");
    cr_assert_eq(orders_with(user, "FINISHED"), 20);
    cr_assert_eq(orders_with(user, "CANCELLED"), 10);
    cr_assert_eq(dead_letters(payments_db) + dead_letters(orders_db), dead_before,
                 "a transient failure was dead-lettered");
    cr_assert_eq(redrives_of(user), 0, "an order needed a re-drive: a message was dropped");
    assert_money_adds_up(user);
}

typedef struct inbox_wait {
    PGconn *db;
    const char *order_id;
} inbox_wait;

static bool recorded(void *arg)
{
    inbox_wait *w = arg;
    return db_int(w->db, "SELECT count(*) FROM inbox WHERE order_id = $1", w->order_id, NULL) == 1;
}

static bool waited_ms(void *arg)
{
    return clock_now_ms() >= *(int64_t *)arg;
}

Test(chaos, database_outage_past_max_poll_interval_keeps_consumers_in_their_group, .timeout = 180,
     .fini = everything_back)
{
    char user[64], order_id[37];
    unique_name(user, sizeof user, "longoutage");
    account_with(user, 100);
    /* An order of our own, its request straight onto the topic while the
     * database is down: a consumer holds it and cannot commit it. */
    insert_order(user, 30, order_id);
    const char *series = "consumer_rebalances_total{topic=\"payment.requests\"}";
    /* The group settled first: every partition owned, the count steady. */
    metric_wait all = {.urls = payments_urls(),
                       .series = "consumer_assigned_partitions{topic=\"payment.requests\"}",
                       .above = kafka_partitions() - 1};
    cr_assert(wait_until(metric_above, &all, 60000),
              "the payments group never owned all partitions");
    int64_t rebalances = metric_sum(payments_urls(), series);
    cr_assert_eq(stack("pg-stop"), 0);
    /* Really down: a new connection is refused (pg_ctl may give up on a
     * slow shutdown and still return). */
    PGconn *probe = PQconnectdb(getenv("PAYMENTS_DATABASE_URL"));
    bool down = PQstatus(probe) != CONNECTION_OK;
    PQfinish(probe);
    cr_assert(down, "PostgreSQL still accepts connections after pg-stop");
    inject_request(order_id, user, 30, 1);
    metric_wait paused = {.urls = payments_urls(),
                          .series = "consumer_paused{topic=\"payment.requests\"}"};
    cr_assert(wait_until(metric_above, &paused, 60000),
              "no consumer paused its partitions (batches %lld, retries %lld, revoked %lld, "
              "assigned %lld, rebalances %lld -> %lld, lag %lld)",
              (long long)metric_sum(payments_urls(),
                                    "consumer_batches_total{topic=\"payment.requests\"}"),
              (long long)metric_sum(payments_urls(),
                                    "consumer_retries_total{topic=\"payment.requests\"}"),
              (long long)metric_sum(payments_urls(),
                                    "consumer_revoked_messages_total{topic=\"payment.requests\"}"),
              (long long)metric_sum(payments_urls(),
                                    "consumer_assigned_partitions{topic=\"payment.requests\"}"),
              (long long)rebalances, (long long)metric_sum(payments_urls(), series),
              (long long)metric_sum(payments_urls(), "consumer_lag{topic=\"payment.requests\"}"));
    /* Past max.poll.interval.ms (KAFKA_MAX_POLL_INTERVAL_MS, 10 s in the
     * test stack): a consumer that stopped polling would be put out of its
     * group now. Time itself is what this test waits for. */
    int64_t until = clock_now_ms() + 15000;
    wait_until(waited_ms, &until, 20000);
    cr_assert_eq(metric_sum(payments_urls(), series), rebalances,
                 "a consumer left its group during the outage");
    cr_assert_eq(stack("pg-start"), 0);

    inbox_wait w = {.db = payments_db(), .order_id = order_id};
    cr_assert(wait_until(recorded, &w, 60000), "the request held through the outage was lost");
    cr_assert_eq(db_int(w.db, "SELECT balance FROM accounts WHERE user_id = $1", user, NULL), 70);
    cr_assert_eq(db_int(w.db, "SELECT count(*) FROM ledger WHERE order_id = $1", order_id, NULL),
                 1);
    PQfinish(w.db);
    cr_assert_eq(metric_sum(payments_urls(), "consumer_paused{topic=\"payment.requests\"}"), 0);
    cr_assert_eq(metric_sum(payments_urls(), series), rebalances, "nobody left the group");
}

/* Everything killed at once while work is in flight in every place it can
 * be: requests in the broker that payments has not read (frozen) and rows
 * in the orders outbox that the relay could not publish (the broker
 * frozen). */
Test(chaos, every_part_killed_then_up_heals_and_keeps_the_data, .timeout = 240,
     .fini = everything_back)
{
    char user[64];
    unique_name(user, sizeof user, "killall");
    account_with(user, 100);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(place_order(user, 10, NULL), 201);
    cr_assert(all_final(user, 60000));

    cr_assert_eq(stack("freeze-every payments"), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(place_order(user, 10, NULL), 201);
    cr_assert_eq(stack("freeze kafka"), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(place_order(user, 10, NULL), 201);
    cr_assert_eq(orders_with(user, "NEW"), 6, "work in flight");
    cr_assert_gt(outbox_rows_with_key(user), 0, "rows in the outbox");

    const char *parts[] = {"kill gateway", "kill-every orders", "kill-every payments", "kill kafka",
                           "kill postgres"};
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++)
        cr_assert_eq(stack(parts[i]), 0, "%s", parts[i]);
    cr_assert_eq(stack("up >/dev/null"), 0, "up makes the stack whole again");

    cr_assert_geq(orders_with(user, "FINISHED"), 5, "the data survived");
    cr_assert_eq(orders_with(user, "FINISHED") + orders_with(user, "NEW") +
                     orders_with(user, "CANCELLED"),
                 11, "the data survived");
    for (int i = 0; i < 5; i++)
        cr_assert_eq(place_order(user, 10, NULL), 201, "orders are taken again");
    cr_assert(all_final(user, 120000), "orders still NEW after the restart");
    /* 50 left after the first five: five of the six in flight are paid. */
    cr_assert_eq(orders_with(user, "FINISHED"), 10);
    cr_assert_eq(orders_with(user, "CANCELLED"), 6);
    cr_assert_eq(redrives_of(user), 0, "an order needed a re-drive: a message was dropped");
    assert_money_adds_up(user);
}

/* A WebSocket following `user` on the orders instance at `base`: the raw
 * upgrade, enough to hold a connection open across a shutdown. Returns the
 * socket once the 101 arrived. */
static int ws_follow(const char *base, const char *user)
{
    int port = 0;
    cr_assert_eq(sscanf(base, "http://127.0.0.1:%d", &port), 1, "%s", base);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char req[2600], answer[512];
    char *token = token_for(user, false);
    int n = snprintf(req, sizeof req,
                     "GET /ws?user_id=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n",
                     user, token);
    free(token);
    cr_assert_eq(write(fd, req, (size_t)n), n);
    ssize_t got = read(fd, answer, sizeof answer - 1);
    cr_assert_gt(got, 0);
    answer[got] = 0;
    cr_assert(strstr(answer, " 101 "), "no upgrade: %s", answer);
    return fd;
}

/* The bytes a log file gained since `from`. Caller frees. */
static char *log_since(const char *name, long from)
{
    char path[512];
    snprintf(path, sizeof path, "%s/log/%s.log", getenv("SHOP_VAR"), name);
    FILE *f = fopen(path, "r");
    cr_assert(f, "%s", path);
    fseek(f, 0, SEEK_END);
    long end = ftell(f);
    char *text = calloc(1, (size_t)(end - from) + 1);
    fseek(f, from, SEEK_SET);
    size_t n = fread(text, 1, (size_t)(end - from), f);
    text[n] = 0;
    fclose(f);
    return text;
}

static long log_size(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/log/%s.log", getenv("SHOP_VAR"), name);
    FILE *f = fopen(path, "r");
    cr_assert(f, "%s", path);
    fseek(f, 0, SEEK_END);
    long end = ftell(f);
    fclose(f);
    return end;
}

/* SIGTERM, as systemd or `make stop` sends it, to both services while a
 * burst is under way and a browser follows it: each stops in dependency
 * order (under the sanitizers: no use after free, no leak, which the log
 * would show after its last line) and the stack, started again, loses
 * nothing. */
Test(chaos, sigterm_mid_burst_stops_cleanly_and_loses_nothing, .timeout = 240)
{
    char user[64];
    unique_name(user, sizeof user, "sigterm");
    account_with(user, 500);
    int ws = ws_follow(orders_url(), user);
    burst b = {.user = user, .orders = 100, .amount = 10};
    pthread_t th = burst_under_way(&b);
    const char *parts[] = {"orders", "payments"};
    long from[2];
    for (int i = 0; i < 2; i++)
        from[i] = log_size(parts[i]);
    for (int i = 0; i < 2; i++) {
        char cmd[64];
        snprintf(cmd, sizeof cmd, "stop %s", parts[i]);
        cr_assert_eq(stack(cmd), 0, "%s", cmd);
    }
    for (int i = 0; i < 2; i++) {
        char *log = log_since(parts[i], from[i]);
        cr_assert(strstr(log, "\"stopped\""), "%s did not finish its shutdown:\n%s", parts[i], log);
        cr_assert(!strstr(log, "Sanitizer") && !strstr(log, "runtime error"), "%s's shutdown:\n%s",
                  parts[i], log);
        free(log);
    }
    close(ws);
    cr_assert_eq(stack("up >/dev/null"), 0);
    pthread_join(th, NULL);

    int accepted = atomic_load(&b.accepted), unanswered = atomic_load(&b.unanswered);
    cr_assert(all_final(user, 120000), "orders still NEW after the restart");
    int64_t placed = orders_with(user, "FINISHED") + orders_with(user, "CANCELLED");
    /* Every 201 is an order; a request that got no answer at all (the
     * connection closed as the service stopped) may or may not have been
     * committed: a client retries those with an Idempotency-Key. */
    cr_assert(placed >= accepted && placed <= accepted + unanswered,
              "%d accepted, %d unanswered, %lld placed", accepted, unanswered, (long long)placed);
    cr_assert_eq(orders_with(user, "FINISHED"), placed < 50 ? placed : 50);
    assert_money_adds_up(user);
}

static void database_thawed(void)
{
    stack("thaw postgres");
}

typedef struct probe {
    const char *base, *path;
} probe;

static bool answers_200(void *arg)
{
    probe *p = arg;
    resp r;
    bool ok = api(&r, "GET", p->base, p->path, NULL, NULL) == 0 && r.status == 200;
    resp_free(&r);
    return ok;
}

/* A database host that hangs (every PostgreSQL process stopped: the
 * sockets stay open, nothing answers, no error ever comes) must not hold
 * requests for minutes: each gets a 503 within a second, the first one
 * included, and the services come back on their own when it answers. */
Test(chaos, database_frozen_answers_503_within_a_second_then_recovers, .timeout = 120,
     .fini = database_thawed)
{
    char user[64], order_id[37];
    unique_name(user, sizeof user, "dbfrozen");
    act_as(user); /* every request below is theirs */
    account_with(user, 100);
    cr_assert_eq(place_order(user, 10, order_id), 201);
    cr_assert(all_final(user, 60000));
    char account[128], order[128];
    snprintf(account, sizeof account, "/accounts/%s", user);
    snprintf(order, sizeof order, "/orders/%s", order_id);

    cr_assert_eq(stack("freeze postgres"), 0);
    for (int i = 0; i < 6; i++) {
        resp r;
        const char *base = i % 2 ? orders_url() : payments_url();
        const char *what = i % 2 ? order : account;
        if (i == 4) { /* a write too */
            base = orders_url();
            what = "/orders";
        }
        char body[160];
        snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"amount\":10}", user);
        cr_assert_eq(api(&r, i == 4 ? "POST" : "GET", base, what, i == 4 ? body : NULL, NULL), 0);
        cr_assert_eq(r.status, 503, "%s %s: %ld %s", base, what, r.status, r.body);
        /* A write whose statement reached the frozen server may run when
         * it thaws: the service cannot know, and says so. */
        if (i == 4)
            cr_assert(strcmp(err_code(&r), "database_unavailable") == 0 ||
                          strcmp(err_code(&r), "outcome_unknown") == 0,
                      "%s", r.body);
        else
            cr_assert_str_eq(err_code(&r), "database_unavailable");
        cr_assert_lt(r.seconds, 1.0, "%s %s took %.2f s", base, what, r.seconds);
        resp_free(&r);
    }
    cr_assert_eq(stack("thaw postgres"), 0);

    probe p = {payments_url(), account}, q = {orders_url(), order};
    cr_assert(wait_until(answers_200, &p, 10000), "payments did not recover");
    cr_assert(wait_until(answers_200, &q, 10000), "orders did not recover");
    cr_assert_eq(place_order(user, 10, NULL), 201);
    cr_assert(all_final(user, 60000), "orders still NEW after the database came back");
    cr_assert_eq(orders_with(user, "FINISHED"), 2);
    assert_money_adds_up(user);
}
