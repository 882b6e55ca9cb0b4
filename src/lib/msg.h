/* The message contract between orders and payments (README, "Messages").
 * JSON objects with "type" and "version"; unknown members are ignored so a
 * newer producer can add some; an unknown type or version is refused. */
#ifndef SHOP_MSG_H
#define SHOP_MSG_H

#include "lib/valid.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MSG_TOPIC_REQUESTS "payment.requests" /* key: user id */
#define MSG_TOPIC_RESULTS "payment.results"   /* key: order id */
#define MSG_VERSION 1
#define MSG_ORDER_ID_LEN 36 /* a UUID in its canonical text form */
#define MSG_REASON_MAX 32

/* payment.requested, payment.cancel and refund.requested go to payments
 * on MSG_TOPIC_REQUESTS (all with the user's key: a cancel or a refund
 * after its order's request); the outcomes come back on MSG_TOPIC_RESULTS
 * (a cancelled order's is payment.failed with reason "cancelled"). */
typedef enum {
    MSG_PAYMENT_REQUESTED,
    MSG_PAYMENT_COMPLETED,
    MSG_PAYMENT_FAILED,
    MSG_PAYMENT_CANCEL,
    MSG_REFUND_REQUESTED,
    MSG_REFUND_COMPLETED,
    MSG_REFUND_FAILED,
} msg_type;

typedef struct payment_msg {
    msg_type type;
    char order_id[MSG_ORDER_ID_LEN + 1];
    char user_id[VALID_USER_ID_MAX + 1];
    int64_t amount;                       /* a refund's: the amount it gives back */
    char reason[MSG_REASON_MAX + 1];      /* payment.failed and refund.failed only */
    char refund_id[MSG_ORDER_ID_LEN + 1]; /* refund.* only: a UUID */
} payment_msg;

/* refund.requested, refund.completed or refund.failed. */
bool msg_is_refund(msg_type t);

/* Returns the JSON text of `m` (caller frees), or NULL when out of memory. */
char *msg_encode(const payment_msg *m);

/* Parses and validates one message. Returns 0, or -EINVAL with a reason
 * for the dead-letter table in `why`. */
int msg_decode(const void *data, size_t len, payment_msg *out, char *why, size_t whylen);

/* "payment.requested", ... */
const char *msg_type_name(msg_type t);

/* A UUID in canonical lower- or upper-case text form. */
bool valid_uuid(const char *s);

#endif
