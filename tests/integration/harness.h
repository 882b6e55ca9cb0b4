/* What the integration tests share: HTTP calls through libcurl, queries
 * through libpq, unique names, and waiting for a condition. The servers are
 * the real ones that scripts/test.sh starts; their addresses come from the
 * environment it sets. */
#ifndef TESTS_HARNESS_H
#define TESTS_HARNESS_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct resp {
    long status;
    json_t *json; /* parsed body, NULL if not JSON */
    char *body;   /* raw body, NUL-terminated */
    char *head;   /* the status line and headers, raw */
    double seconds;
    char error[256]; /* curl's words when no answer came (api returned -1) */
} resp;

/* Requests carry a token minted with the test stack's signing key
 * (AUTH_KEY_FILE), for: the user act_as() set in this thread, else the
 * user the request names (/accounts/U, ?user_id=U, a body's user_id).
 * Pass NO_TOKEN among the headers to send none, or an Authorization header
 * of your own. */
#define NO_TOKEN "X-Test-No-Token: 1"
void act_as(const char *user);          /* NULL: back to naming */
void act_as_operator(const char *user); /* the same, with the operator role */
/* A token for `user`; caller frees. */
char *token_for(const char *user, bool operator);
/* One that says exactly this (expired, another audience); caller frees. */
char *token_for_claims(const char *user, int64_t iat, int64_t exp, const char *audience);

/* Sends one request to `base` + `path`. `headers` is NULL-terminated, may be
 * NULL. Returns 0, or -1 when no HTTP answer came (connection refused...). */
int api(resp *r, const char *method, const char *base, const char *path, const char *body,
        const char *const *headers);
void resp_free(resp *r);

/* The error code of an error body, or "" . Borrowed from r. */
const char *err_code(const resp *r);

const char *payments_url(void);
const char *identity_url(void);

/* The value of the first header `name` of an answer, into `out`; NULL when
 * absent. */
const char *resp_header(const resp *r, const char *name, char *out, size_t len);

/* A connection to the identity database; exits the test on failure. */
PGconn *identity_db(void);
const char *orders_url(void);

/* Every instance's base URL, space-separated (SHOP_ORDERS_URLS,
 * SHOP_PAYMENTS_URLS; the one URL above when unset). */
const char *orders_urls(void);
const char *payments_urls(void);

/* The partitions of payment.requests, as the broker (KAFKA_BROKERS) says:
 * a stack whose topics were made with more keeps them. Exits the test when
 * the broker does not answer. */
int kafka_partitions(void);

/* A connection to the payments database; exits the test on failure. */
PGconn *payments_db(void);

/* A connection to the orders database; exits the test on failure. */
PGconn *orders_db(void);

/* Runs a statement with at most one text parameter (NULL: none), asserting
 * that it succeeded. */
void db_ok(PGconn *db, const char *sql, const char *param);

/* A trigger made for a test, on `table`: function `name` runs `body`
 * (plpgsql statements, NEW in hand) for each inserted row, before the
 * insert, or at COMMIT when `at_commit` (a deferred constraint trigger).
 * test_trigger_drop removes both (for a test's .fini). */
void test_trigger(PGconn *db, const char *name, const char *table, const char *body,
                  bool at_commit);
void test_trigger_drop(PGconn *db, const char *name, const char *table);

/* Runs a query with up to 3 text parameters that returns one integer. */
int64_t db_int(PGconn *db, const char *sql, const char *p1, const char *p2);

/* A name no other test run uses: prefix, pid, a counter and the time. */
void unique_name(char *out, size_t len, const char *prefix);

/* Runs scripts/stack.sh with `cmd`; returns its exit status. */
int stack(const char *cmd);

/* Calls cond(arg) every 20 ms until it returns true or `timeout_ms` passes. */
bool wait_until(bool (*cond)(void *), void *arg, int timeout_ms);

/* Creates the account and deposits `amount` (if > 0); asserts success. */
void account_with(const char *user, int64_t amount);

/* Places an order; returns the HTTP status, and the order id in `id`
 * (37 bytes) on 201. */
long place_order(const char *user, int64_t amount, char *id);

/* A client placing `orders` orders of `amount` one after the other, for a
 * thread: pthread_create(&t, NULL, place_orders, &burst). `accepted`
 * counts the 201s as they come; `done` is set at the end. With
 * `cancel_every` N, every Nth order placed is cancelled at once, as a
 * shopper who changed their mind (POST /orders/{id}/cancel): the orders
 * whose cancel was taken (202) and refused (409, paid already) are kept
 * for burst_assert_cancels. */
#define BURST_CANCELS_MAX 64
#define BURST_ORDERS_MAX 200
typedef struct burst {
    const char *user;
    int orders;
    int64_t amount;
    int cancel_every; /* every Nth order cancelled as soon as it is placed */
    int refund_every; /* every Nth order, half of an earlier paid one refunded */
    atomic_int accepted;
    atomic_int unanswered; /* no HTTP answer at all: committed or not, unknown */
    atomic_bool done;
    int cancels_taken, cancels_refused; /* the thread's own until done */
    char taken[BURST_CANCELS_MAX][37], refused[BURST_CANCELS_MAX][37];
    atomic_int refunds_taken; /* refunds answered 202 (their ids below) */
    int next_refund;          /* the next candidate in placed[] */
    char refunds[BURST_CANCELS_MAX][37];
    char placed[BURST_ORDERS_MAX][37]; /* accepted and not cancelled: refund candidates */
    int nplaced;
} burst;
void *place_orders(void *burst);

/* `threads` clients at once, each placing `each` orders of `amount` for
 * `user` (at most 32 threads); returns how many were accepted (201). */
int place_orders_at_once(const char *user, int threads, int each, int64_t amount);

/* Once the burst's orders are final: each order whose cancel was taken
 * ended CANCELLED (never FINISHED), each whose cancel was refused as paid
 * is FINISHED. */
void burst_assert_cancels(const burst *b);

/* Once the burst's refunds are final: each refund answered 202 is
 * COMPLETED (payments credited it: make reconcile checks it was once). */
void burst_assert_refunds(const burst *b);

/* Re-drives `user`'s orders and refunds needed (the sum of their
 * redrive_count): a drill whose messages all arrived needs none. */
int64_t redrives_of(const char *user);

/* Rows of the orders outbox waiting to be published with `key` (a payment
 * request's key is its user). */
int64_t outbox_rows_with_key(const char *key);

/* Waits until `user` has at least `n` orders in NEW; false after
 * `timeout_ms`. A drill asserts with it that work is in flight. */
bool at_least_new(const char *user, int64_t n, int timeout_ms);

/* Waits until `user` has no order left in NEW and no refund PENDING;
 * false after `timeout_ms`. */
bool all_final(const char *user, int timeout_ms);

/* Number of `user`'s orders with `status`. */
int64_t orders_with(const char *user, const char *status);

/* The money check for one user: make reconcile (scripts/reconcile.sh)
 * for their user id, every check of the books across both databases (each
 * paid order debited once, no other net, each completed refund credited
 * once, each balance what its entries add up to); asserts it passes. */
void assert_money_adds_up(const char *user);

/* Runs make reconcile (scripts/reconcile.sh) for the user ids LIKE
 * `users`: its exit status (0: the books hold, 1: a mismatch), its output
 * in `out` (caller frees). */
int reconcile(const char *users, char **out);

/* For wait_until: payments' instances together count `target` or more
 * of the metric `series` (metric_sum). */
typedef struct count_wait {
    const char *series;
    int64_t target;
} count_wait;
bool payments_count_reached(void *count_wait);

/* A random (version 4) UUID, 37 bytes. */
void random_uuid(char *out);

/* A counter from a service's /metrics, by its full series name with labels. */
int64_t metric(const char *base_url, const char *series);

/* The sum of a series over every instance in `urls` (space-separated):
 * Kafka spreads the partitions, and so the work, over them. */
int64_t metric_sum(const char *urls, const char *series);

/* Sends one payment.requested for `order_id` straight onto the topic with a
 * real producer, as a redelivery would; waits for the broker's ack. */
void inject_request(const char *order_id, const char *user, int64_t amount, int copies);

/* One payment.requested for each of `n` orders of `user`, request i onto
 * partition i modulo the topic's partitions, whatever the key says: one
 * user's requests on every partition are decided by several consumers at
 * once (a race the key otherwise rules out). Waits for the broker's acks. */
void inject_requests_spread(const char (*order_ids)[37], int n, const char *user, int64_t amount);

/* The same, each with the user's key, as the orders relay sends them. */
void inject_requests(const char (*order_ids)[37], int n, const char *user, int64_t amount);

/* Inserts an order straight into the orders database, NEW and not due for
 * re-drive for an hour, with no outbox row: its request is the test's to
 * send. `id` gets the new order's id (37 bytes). */
void insert_order(const char *user, int64_t amount, char *id);

/* Sends one payment.cancel for `order_id` onto payment.requests with the
 * user's key, as the orders relay would; waits for the broker's ack. */
void inject_cancel(const char *order_id, const char *user, int64_t amount);

/* Sends `copies` refund.requested for refund `refund_id` of `order_id`
 * onto payment.requests with the user's key; waits for the broker's ack. */
void inject_refund(const char *refund_id, const char *order_id, const char *user, int64_t amount,
                   int copies);

/* Produces `payload` as it is (poison, say) onto `topic`; waits for the ack. */
void inject_raw(const char *topic, const char *key, const char *payload);

#endif
