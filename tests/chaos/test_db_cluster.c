/* The database cluster's drills, against a stack whose PostgreSQL is three
 * nodes under Patroni (DB_NODES=3: synchronous_mode_strict, the services
 * walking every node for the leader). A careful client places orders,
 * deposits, cancels and refunds throughout, each with an Idempotency-Key
 * it sends again after a 503 or no answer. The leader's machine is lost
 * (Patroni and PostgreSQL SIGKILLed together), a replica takes over, the
 * old node rejoins, and the new leader is lost the same way; in the second
 * drill the leader is cut off (SIGSTOP past Patroni's ttl) and comes back.
 * Every order answered 201 ends final, none is debited twice, each deposit
 * answered 201 is in the books once, the books add up across both
 * databases, nothing is dead-lettered, and the longest time without an
 * accepted order is printed. */
#include "../integration/harness.h"
#include "lib/clock.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <curl/curl.h>
#include <glob.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CAREFUL_MAX 2000
#define CAREFUL_SIDE 200

/* A client that places orders one after another until told to stop, every
 * fifth step a deposit, every seventh a cancel of the order just placed,
 * every sixth a refund of half of an earlier paid one. */
typedef struct careful {
    const char *user;
    char pids[1024]; /* the services' pids when it began */
    atomic_bool stop;
    atomic_int accepted;
    int deposits, gave_up; /* deposits answered 201; calls never answered for good */
    int64_t last_accept_ms, longest_gap_ms;
    char ids[CAREFUL_MAX][37]; /* accepted orders */
    int nids, next_refund;
    char cancelled[CAREFUL_SIDE][37]; /* cancel taken (202): ends CANCELLED */
    int ncancelled;
    char refunds[CAREFUL_SIDE][37]; /* refund ids answered 202: end COMPLETED */
    int nrefunds;
} careful;

/* One call as a careful client makes it: with its Idempotency-Key (if any),
 * again with the same key after a 5xx or no answer, for up to 90 s (a
 * failover takes seconds). Returns the last status; `r` holds the answer
 * (the caller frees it). */
/* The longest a single request of the client took to be answered (a 503
 * included): a failover must answer quickly, never hang. */
static _Atomic int64_t longest_call_ms;

static long call_final(resp *r, const char *method, const char *base, const char *path,
                       const char *body, const char *key)
{
    char header[96];
    snprintf(header, sizeof header, "Idempotency-Key: %s", key ? key : "");
    const char *headers[] = {key ? header : NULL, NULL};
    int64_t until = clock_now_ms() + 90000;
    for (;;) {
        int64_t sent = clock_now_ms();
        long status = api(r, method, base, path, body, headers) == 0 ? r->status : 0;
        int64_t took = clock_now_ms() - sent;
        for (int64_t was = atomic_load(&longest_call_ms);
             took > was && !atomic_compare_exchange_weak(&longest_call_ms, &was, took);)
            ;
        if ((status != 0 && status < 500) || clock_now_ms() > until)
            return status;
        resp_free(r);
        usleep(200 * 1000);
    }
}

static void place_one(careful *c)
{
    char key[37], body[160];
    random_uuid(key);
    snprintf(body, sizeof body, "{\"user_id\":\"%s\",\"amount\":3,\"description\":\"drill\"}",
             c->user);
    resp r;
    long status = call_final(&r, "POST", orders_url(), "/orders", body, key);
    if (status == 201 && c->nids < CAREFUL_MAX) {
        snprintf(c->ids[c->nids++], 37, "%s", json_string_value(json_object_get(r.json, "id")));
        int64_t now = clock_now_ms();
        if (c->last_accept_ms && now - c->last_accept_ms > c->longest_gap_ms)
            c->longest_gap_ms = now - c->last_accept_ms;
        c->last_accept_ms = now;
        atomic_fetch_add(&c->accepted, 1);
    } else if (status != 201) {
        c->gave_up++;
        fprintf(stderr, "database drill: an order answered %ld for good\n", status);
    }
    resp_free(&r);
}

static void deposit_one(careful *c)
{
    char key[37], path[128];
    random_uuid(key);
    snprintf(path, sizeof path, "/accounts/%s/deposits", c->user);
    resp r;
    long status = call_final(&r, "POST", payments_url(), path, "{\"amount\": 20}", key);
    if (status == 201)
        c->deposits++;
    else
        c->gave_up++;
    resp_free(&r);
}

static void cancel_last(careful *c)
{
    if (!c->nids || c->ncancelled == CAREFUL_SIDE)
        return;
    char path[96];
    snprintf(path, sizeof path, "/orders/%s/cancel", c->ids[c->nids - 1]);
    resp r;
    long status = call_final(&r, "POST", orders_url(), path, NULL, NULL);
    if (status == 202) { /* ends CANCELLED; out of the refund candidates */
        memcpy(c->cancelled[c->ncancelled++], c->ids[--c->nids], 37);
    } else if (status != 409) { /* 409: paid already (it stays a candidate) */
        c->gave_up++;
    }
    resp_free(&r);
}

/* Half of the next accepted order that is paid, refunded; one not yet
 * decided is left for a later turn. */
static void refund_one_paid(careful *c)
{
    for (; c->next_refund < c->nids && c->nrefunds < CAREFUL_SIDE; c->next_refund++) {
        const char *id = c->ids[c->next_refund];
        char path[96], key[64];
        snprintf(path, sizeof path, "/orders/%s", id);
        resp r;
        long status = call_final(&r, "GET", orders_url(), path, NULL, NULL);
        const char *st = status == 200 ? json_string_value(json_object_get(r.json, "status")) : "";
        bool paid = st && strcmp(st, "FINISHED") == 0, undecided = st && strcmp(st, "NEW") == 0;
        resp_free(&r);
        if (undecided || status != 200)
            return;
        if (!paid)
            continue;
        snprintf(path, sizeof path, "/orders/%s/refunds", id);
        snprintf(key, sizeof key, "refund-%s", id);
        status = call_final(&r, "POST", orders_url(), path, "{\"amount\":1}", key);
        if (status == 202)
            snprintf(c->refunds[c->nrefunds++], 37, "%s",
                     json_string_value(json_object_get(r.json, "id")));
        else
            c->gave_up++;
        resp_free(&r);
        c->next_refund++;
        return;
    }
}

static void *carefully(void *arg)
{
    careful *c = arg;
    act_as(c->user);
    for (int i = 0; !atomic_load(&c->stop); i++) {
        place_one(c);
        if (i % 5 == 4)
            deposit_one(c);
        if (i % 7 == 6)
            cancel_last(c);
        if (i % 6 == 5)
            refund_one_paid(c);
        usleep(20 * 1000);
    }
    return NULL;
}

typedef struct accepted_wait {
    careful *c;
    int target;
} accepted_wait;

static bool accepted_reached(void *arg)
{
    accepted_wait *w = arg;
    return atomic_load(&w->c->accepted) >= w->target;
}

/* Waits until `more` orders were accepted after now. */
static void let_orders_come(careful *c, int more)
{
    accepted_wait w = {.c = c, .target = atomic_load(&c->accepted) + more};
    cr_assert(wait_until(accepted_reached, &w, 90000), "orders stopped being accepted");
}

/* ---- the cluster, through the nodes' Patroni REST APIs ---- */

static int patroni_port(int node)
{
    const char *base = getenv("PATRONI_PORT");
    return (base ? atoi(base) : 8008) + node - 1;
}

static int pg_port(int node)
{
    const char *base = getenv("PG_PORT");
    return (base ? atoi(base) : 54320) + node - 1;
}

static size_t discard(char *data, size_t size, size_t n, void *arg)
{
    (void)data, (void)arg;
    return size * n;
}

/* The HTTP status of GET /`what` on node N's Patroni (0: no answer within
 * a second: a frozen node's port accepts and never answers). */
static long patroni_says(int node, const char *what)
{
    char url[96];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/%s", patroni_port(node), what);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 1000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    return status;
}

/* The node whose Patroni says it leads (and whose PostgreSQL writes), or 0. */
static int leader(void)
{
    for (int n = 1; n <= 3; n++)
        if (patroni_says(n, "primary") == 200)
            return n;
    return 0;
}

typedef struct node_wait {
    int node;
} node_wait;

static bool another_leads(void *arg)
{
    int l = leader();
    return l != 0 && l != ((node_wait *)arg)->node;
}

/* Node N streams from the leader again, a replica (not more than 16 MB
 * behind). */
static bool rejoined(void *arg)
{
    return patroni_says(((node_wait *)arg)->node, "replica?lag=16MB") == 200;
}

static void node_cmd(const char *what, int node)
{
    char cmd[64];
    snprintf(cmd, sizeof cmd, "%s db-%d", what, node);
    cr_assert_eq(stack(cmd), 0, "stack.sh %s", cmd);
}

static int64_t dead_letters_in(PGconn *db)
{
    int64_t n = db_int(db, "SELECT count(*) FROM dead_letters", NULL, NULL);
    PQfinish(db);
    return n;
}

static int64_t all_dead_letters(void)
{
    return dead_letters_in(orders_db()) + dead_letters_in(payments_db());
}

/* Every service instance's pid, from the stack's pid files, in one
 * string: a drill ends with the same processes it began with (a service
 * waits a failover out; it never exits over it). */
static void service_pids(char *out, size_t len)
{
    char pattern[512];
    snprintf(pattern, sizeof pattern, "%s/run/[oip][ard]*.pid", getenv("SHOP_VAR"));
    glob_t g;
    out[0] = '\0';
    if (glob(pattern, 0, NULL, &g) != 0)
        return;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        FILE *f = fopen(g.gl_pathv[i], "r");
        char pid[32] = "";
        if (f && fgets(pid, sizeof pid, f)) {
            pid[strcspn(pid, "\n")] = '\0';
            size_t used = strlen(out);
            snprintf(out + used, len - used, "%s=%s ", strrchr(g.gl_pathv[i], '/') + 1, pid);
        }
        if (f)
            fclose(f);
    }
    globfree(&g);
}

/* What every drill checks at its end. */
static void assert_nothing_lost(careful *c, int64_t dead_before, const char *drill, int64_t t0)
{
    cr_assert(all_final(c->user, 180000), "orders still NEW or refunds PENDING after the drill");
    cr_assert_eq(c->gave_up, 0, "%d calls never got a final answer", c->gave_up);
    PGconn *o = orders_db();
    for (int i = 0; i < c->nids; i++)
        cr_assert_eq(db_int(o,
                            "SELECT count(*) FROM orders WHERE id = $1"
                            " AND status IN ('FINISHED', 'CANCELLED')",
                            c->ids[i], NULL),
                     1, "order %s, answered 201, is not final", c->ids[i]);
    for (int i = 0; i < c->ncancelled; i++)
        cr_assert_eq(db_int(o, "SELECT count(*) FROM orders WHERE id = $1 AND status = 'CANCELLED'",
                            c->cancelled[i], NULL),
                     1, "order %s, whose cancel was taken, did not end CANCELLED", c->cancelled[i]);
    for (int i = 0; i < c->nrefunds; i++)
        cr_assert_eq(db_int(o,
                            "SELECT count(*) FROM refunds WHERE id = $1 AND status = 'COMPLETED'",
                            c->refunds[i], NULL),
                     1, "refund %s, answered 202, did not complete", c->refunds[i]);
    int64_t placed = db_int(o, "SELECT count(*) FROM orders WHERE user_id = $1", c->user, NULL);
    PQfinish(o);
    cr_assert_eq(placed, c->nids + c->ncancelled, "%lld orders for %d answered 201",
                 (long long)placed, c->nids + c->ncancelled);
    PGconn *p = payments_db();
    int64_t deposits = db_int(
        p, "SELECT count(*) FROM ledger WHERE user_id = $1 AND kind = 'deposit'", c->user, NULL);
    PQfinish(p);
    cr_assert_eq(deposits, 1 + c->deposits, "%lld deposits in the books for %d answered 201 (+1)",
                 (long long)deposits, c->deposits);
    assert_money_adds_up(c->user);
    cr_assert_eq(all_dead_letters(), dead_before, "a failover was dead-lettered");
    char pids[1024];
    service_pids(pids, sizeof pids);
    cr_assert_str_eq(pids, c->pids, "a service exited (or was restarted) during the drill");
    /* A request answers (201, or 503 to retry) within the orders deadline
     * or DB_COMMIT_WAIT_MS and a connection attempt on each node: a
     * failover makes no request wait out the client's 10 s. */
    int64_t longest = atomic_load(&longest_call_ms);
    cr_assert_lt(longest, 8000, "a request took %lld ms to be answered", (long long)longest);
    cr_log_info("%s: %d orders (%d cancelled), %d deposits, %d refunds in %.0f s; longest time "
                "without an accepted order %lld ms",
                drill, c->nids + c->ncancelled, c->ncancelled, c->deposits, c->nrefunds,
                (clock_now_ms() - t0) / 1000.0, (long long)c->longest_gap_ms);
    fprintf(stderr,
            "%s: longest time without an accepted order: %lld ms; longest wait for an answer "
            "(201 or 503): %lld ms\n",
            drill, (long long)c->longest_gap_ms, (long long)longest);
}

/* Each test's client (a test runs in a process of its own). */
static careful client;
static char client_user[64];

static careful *start_client(pthread_t *th)
{
    careful *c = &client;
    unique_name(client_user, sizeof client_user, "dbdrill");
    c->user = client_user;
    service_pids(c->pids, sizeof c->pids);
    cr_assert(strstr(c->pids, "orders.pid=") && strstr(c->pids, "payments.pid="),
              "no pid files: %s", c->pids);
    account_with(client_user, 100000);
    pthread_create(th, NULL, carefully, c);
    return c;
}

static void stop_client(careful *c, pthread_t th)
{
    atomic_store(&c->stop, true);
    pthread_join(th, NULL);
}

Test(cluster, db_leader_lost_twice_mid_burst_loses_nothing, .timeout = 600)
{
    int64_t dead_before = all_dead_letters(), t0 = clock_now_ms();
    pthread_t th;
    careful *c = start_client(&th);
    let_orders_come(c, 20);
    for (int round = 0; round < 2; round++) {
        node_wait lost = {.node = leader()};
        cr_assert_neq(lost.node, 0, "no leader before round %d", round + 1);
        fprintf(stderr, "database drill: %.3f s: db-%d, the leader, lost (SIGKILL)\n",
                clock_wall_ms() / 1000.0, lost.node);
        node_cmd("kill", lost.node);
        cr_assert(wait_until(another_leads, &lost, 60000), "no replica took over from db-%d",
                  lost.node);
        let_orders_come(c, 25);
        /* make run heals it: it rejoins as a replica (pg_rewind where its
         * history went further than the new leader's). */
        cr_assert_eq(stack("up >/dev/null"), 0);
        cr_assert(wait_until(rejoined, &lost, 120000), "db-%d did not rejoin as a replica",
                  lost.node);
        let_orders_come(c, 10);
    }
    stop_client(c, th);
    assert_nothing_lost(c, dead_before, "database drill (leader killed twice)", t0);
}

/* Sends `sql` on `db` and waits up to `ms` for its answer: true only for a
 * success within that time. */
static bool acknowledged_within(PGconn *db, const char *sql, int ms)
{
    if (!PQsendQuery(db, sql))
        return false;
    int64_t until = clock_now_ms() + ms;
    bool ok = true;
    for (;;) {
        while (PQconsumeInput(db) && !PQisBusy(db)) {
            PGresult *r = PQgetResult(db);
            if (!r)
                return ok;
            ok = ok && PQresultStatus(r) == PGRES_COMMAND_OK;
            PQclear(r);
        }
        if (PQstatus(db) != CONNECTION_OK)
            return false;
        int64_t left = until - clock_now_ms();
        if (left <= 0)
            return false;
        struct pollfd p = {.fd = PQsocket(db), .events = POLLIN};
        poll(&p, 1, (int)left);
    }
}

/* Whatever happened, no node stays frozen for the tests after. */
static void thaw_every_node(void)
{
    for (int n = 1; n <= 3; n++) {
        char cmd[64];
        snprintf(cmd, sizeof cmd, "thaw db-%d 2>/dev/null", n);
        stack(cmd);
    }
}

Test(cluster, db_leader_cut_off_past_its_ttl_never_writes_as_a_second_leader, .timeout = 400,
     .fini = thaw_every_node)
{
    int64_t dead_before = all_dead_letters(), t0 = clock_now_ms();
    node_wait cut = {.node = leader()};
    cr_assert_neq(cut.node, 0, "no leader");
    /* A connection held to the leader before it is cut off, as a pool's. */
    char conninfo[160];
    snprintf(conninfo, sizeof conninfo,
             "host=127.0.0.1 port=%d dbname=orders user=shop connect_timeout=5", pg_port(cut.node));
    PGconn *held = PQconnectdb(conninfo);
    cr_assert_eq(PQstatus(held), CONNECTION_OK, "%s", PQerrorMessage(held));
    db_ok(held, "CREATE TABLE IF NOT EXISTS drill_probe (note text)", NULL);

    pthread_t th;
    careful *c = start_client(&th);
    let_orders_come(c, 20);
    fprintf(stderr, "database drill: %.3f s: db-%d, the leader, cut off (SIGSTOP)\n",
            clock_wall_ms() / 1000.0, cut.node);
    node_cmd("freeze", cut.node);
    cr_assert(wait_until(another_leads, &cut, 60000), "no replica took over from db-%d", cut.node);
    let_orders_come(c, 25);
    node_cmd("thaw", cut.node);
    /* Back, it still believes it leads until its Patroni's next loop: a
     * write on the connection held to it must not be acknowledged (its
     * synchronous standby follows the new leader now, and Patroni demotes
     * it), and no moment has two nodes saying they lead. */
    bool acked = acknowledged_within(held, "INSERT INTO drill_probe VALUES ('split brain')", 15000);
    PQfinish(held);
    cr_assert(!acked, "the old leader acknowledged a write after the new one took over");
    for (int i = 0; i < 50; i++) {
        int leading = 0;
        for (int n = 1; n <= 3; n++)
            leading += patroni_says(n, "primary") == 200;
        cr_assert_leq(leading, 1, "%d nodes say they lead", leading);
        usleep(100 * 1000);
    }
    cr_assert(wait_until(rejoined, &cut, 120000), "db-%d did not rejoin as a replica", cut.node);
    let_orders_come(c, 10);
    stop_client(c, th);
    PGconn *o = orders_db();
    cr_assert_eq(db_int(o, "SELECT count(*) FROM drill_probe", NULL, NULL), 0,
                 "the old leader's write survived");
    db_ok(o, "DROP TABLE drill_probe", NULL);
    PQfinish(o);
    assert_nothing_lost(c, dead_before, "database drill (leader cut off)", t0);
}

typedef struct nodes_wait {
    int a, b;
} nodes_wait;

static bool both_rejoined(void *arg)
{
    nodes_wait *w = arg;
    return patroni_says(w->a, "replica?lag=16MB") == 200 &&
           patroni_says(w->b, "replica?lag=16MB") == 200;
}

/* Both replicas lost: strict synchronous mode makes a write wait for a
 * standby rather than go on with one copy (docs/decisions.md). The client
 * gets a 503 with Retry-After within DB_COMMIT_WAIT_MS (not a hang), reads
 * go on, and once the replicas are back the same Idempotency-Key finds the
 * deposit done exactly once. */
Test(cluster, db_both_replicas_lost_writes_wait_answered_503_then_done_once, .timeout = 300)
{
    char user[64], path[128], key[37];
    unique_name(user, sizeof user, "dbdrill");
    account_with(user, 100);
    int lead = leader();
    cr_assert_neq(lead, 0, "no leader");
    nodes_wait others = {.a = lead % 3 + 1, .b = (lead + 1) % 3 + 1};
    node_cmd("kill", others.a);
    node_cmd("kill", others.b);

    snprintf(path, sizeof path, "/accounts/%s/deposits", user);
    random_uuid(key);
    char header[80];
    snprintf(header, sizeof header, "Idempotency-Key: %s", key);
    const char *headers[] = {header, NULL};
    act_as(user);
    resp r;
    int64_t t0 = clock_now_ms();
    cr_assert_eq(api(&r, "POST", payments_url(), path, "{\"amount\": 7}", headers), 0,
                 "no answer: %s", r.error);
    int64_t took = clock_now_ms() - t0;
    char retry[16];
    cr_assert_eq(r.status, 503, "a write with no standby left answered %ld: %s", r.status, r.body);
    cr_assert_not_null(resp_header(&r, "Retry-After", retry, sizeof retry));
    cr_assert_lt(took, 9000, "the 503 took %lld ms", (long long)took);
    resp_free(&r);
    snprintf(path, sizeof path, "/accounts/%s", user);
    cr_assert_eq(api(&r, "GET", payments_url(), path, NULL, NULL), 0);
    cr_assert_eq(r.status, 200, "a read with no standby left answered %ld", r.status);
    resp_free(&r);

    cr_assert_eq(stack("up >/dev/null"), 0);
    cr_assert(wait_until(both_rejoined, &others, 120000), "the replicas did not rejoin");
    snprintf(path, sizeof path, "/accounts/%s/deposits", user);
    long status = call_final(&r, "POST", payments_url(), path, "{\"amount\": 7}", key);
    cr_assert_eq(status, 201, "the deposit, sent again with its key, answered %ld: %s", status,
                 r.body);
    resp_free(&r);
    act_as(NULL);
    PGconn *p = payments_db();
    cr_assert_eq(db_int(p,
                        "SELECT count(*) FROM ledger WHERE user_id = $1 AND kind = 'deposit'"
                        " AND amount = 7",
                        user, NULL),
                 1, "the deposit is not in the books exactly once");
    PQfinish(p);
    assert_money_adds_up(user);
    fprintf(stderr, "database drill (both replicas lost): a write answered 503 after %lld ms\n",
            (long long)took);
}
