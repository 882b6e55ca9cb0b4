/* The connection pool against the real database: what a connection carries
 * back into the pool. */
#include "harness.h"
#include "lib/clock.h"
#include "lib/db.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <stdlib.h>

static db_pool *one_connection(void)
{
    const char *url = getenv("ORDERS_DATABASE_URL");
    db_pool *pool = db_pool_new(url ? url : "postgresql://shop@127.0.0.1:54330/orders", 1, NULL);
    cr_assert_not_null(pool);
    return pool;
}

/* A transaction begun by hand (not through db_begin), or one a failed
 * command aborted, is rolled back when its connection goes back: the next
 * user starts idle, and sees nothing of it. */
Test(db_pool, a_connection_comes_back_idle_whatever_its_user_left_open)
{
    db_pool *pool = one_connection();
    db_conn *c = NULL;
    cr_assert_eq(db_acquire(pool, 1000, &c), 0);
    cr_assert_eq(db_exec_sql(c, "BEGIN"), 0);
    cr_assert_eq(db_exec_sql(c, "CREATE TEMP TABLE left_open (x int)"), 0);
    cr_assert_eq(PQtransactionStatus(db_pg(c)), PQTRANS_INTRANS);
    db_release(pool, c);

    cr_assert_eq(db_acquire(pool, 1000, &c), 0);
    cr_assert_eq(PQtransactionStatus(db_pg(c)), PQTRANS_IDLE, "the transaction was rolled back");
    cr_assert_neq(db_exec_sql(c, "SELECT * FROM left_open"), 0, "its table went with it");
    /* An aborted transaction: a failed command inside a BEGIN. */
    cr_assert_eq(db_exec_sql(c, "BEGIN"), 0);
    cr_assert_neq(db_exec_sql(c, "SELECT 1/0"), 0);
    cr_assert_eq(PQtransactionStatus(db_pg(c)), PQTRANS_INERROR);
    db_release(pool, c);

    cr_assert_eq(db_acquire(pool, 1000, &c), 0);
    cr_assert_eq(PQtransactionStatus(db_pg(c)), PQTRANS_IDLE);
    cr_assert_eq(db_exec_sql(c, "SELECT 1"), 0, "the connection works");
    db_release(pool, c);
    db_pool_free(pool);
}

typedef struct locker {
    int hold_ms;
    atomic_bool holding;
} locker;

/* Holds a lock on a scratch table for hold_ms, from a connection of its own. */
static void *hold_lock(void *arg)
{
    locker *l = arg;
    PGconn *db = orders_db();
    PQclear(PQexec(db, "BEGIN"));
    PQclear(PQexec(db, "LOCK TABLE stall_probe IN ACCESS EXCLUSIVE MODE"));
    atomic_store(&l->holding, true);
    struct timespec t = {.tv_sec = l->hold_ms / 1000, .tv_nsec = (l->hold_ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
    PQclear(PQexec(db, "COMMIT"));
    PQfinish(db);
    return NULL;
}

static bool lock_held(void *arg)
{
    return atomic_load(&((locker *)arg)->holding);
}

/* The stall guard gives up on a server that stays silent (chaos::
 * database_frozen_answers_503_within_a_second_then_recovers); a command that
 * waits on a lock is silent too, with the server well. It must wait on, past
 * DB_STALL_MS, and succeed when the lock goes. */
Test(db_pool, a_lock_wait_longer_than_the_stall_guard_is_not_a_stall, .timeout = 30)
{
    PGconn *db = orders_db();
    PQclear(PQexec(db, "CREATE TABLE IF NOT EXISTS stall_probe (x int)"));
    PQfinish(db);
    db_pool *pool = one_connection();
    db_pool_guard(pool, 800, 800, 0);
    locker l = {.hold_ms = 2500};
    pthread_t t;
    pthread_create(&t, NULL, hold_lock, &l);
    cr_assert(wait_until(lock_held, &l, 5000), "the lock was never taken");
    db_conn *c = NULL;
    cr_assert_eq(db_acquire(pool, 1000, &c), 0);
    int64_t t0 = clock_now_ms();
    int rc = db_exec_sql(c, "SELECT count(*) FROM stall_probe");
    int64_t waited = clock_now_ms() - t0;
    db_release(pool, c);
    pthread_join(t, NULL);
    cr_assert_eq(rc, 0, "a lock wait of %lld ms was taken for a stall (%s)", (long long)waited,
                 err_str(rc));
    cr_assert_geq(waited, 2000, "it did wait for the lock");
    db_pool_free(pool);
    db = orders_db();
    PQclear(PQexec(db, "DROP TABLE stall_probe"));
    PQfinish(db);
}
