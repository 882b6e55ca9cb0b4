/* The connection pool against the real database: what a connection carries
 * back into the pool. */
#include "harness.h"
#include "lib/db.h"

#include <criterion/criterion.h>
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
