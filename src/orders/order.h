/* An order and the rules of its life: NEW, then FINISHED (paid) or
 * CANCELLED (with the reason), and only from NEW; a FINISHED order's
 * refunds give its money back, and all of it back it is REFUNDED. Pure. */
#ifndef ORDERS_ORDER_H
#define ORDERS_ORDER_H

#include "lib/msg.h"
#include "lib/trace.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ORDER_DESCRIPTION_MAX 500
#define ORDER_REFUNDS_MAX 50 /* refunds of one order: its read lists them all */

typedef struct order {
    char id[MSG_ORDER_ID_LEN + 1];
    char user_id[VALID_USER_ID_MAX + 1];
    int64_t amount;
    char description[4 * ORDER_DESCRIPTION_MAX + 1]; /* UTF-8 */
    char status[16];
    char reason[MSG_REASON_MAX + 1]; /* "" when none */
    char created_at[40];
    char updated_at[40];
    int64_t seq;             /* creation order; the listing's cursor */
    bool cancel_requested;   /* its owner asked to cancel it (while NEW) */
    int64_t refund_reserved; /* its refunds that did not fail, pending or not */
    int64_t refunded_amount; /* what its completed refunds gave back */
    int refund_count;        /* refunds asked for, failed or not */
    /* The W3C context of the request that placed it ("": none), whose
     * trace its re-drives go on in; its JSON names the trace when it was
     * recorded. */
    char traceparent[TRACE_PARENT_LEN + 1];
} order;

/* A refund of a paid order: PENDING, then COMPLETED or FAILED (reason). */
typedef struct refund {
    char id[MSG_ORDER_ID_LEN + 1];
    char order_id[MSG_ORDER_ID_LEN + 1];
    char user_id[VALID_USER_ID_MAX + 1];
    int64_t amount;
    char status[16];
    char reason[MSG_REASON_MAX + 1]; /* "" when none */
    char created_at[40];
    char updated_at[40];
} refund;

/* A description: `len` bytes (as JSON gave them, so an embedded NUL
 * shows), at most ORDER_DESCRIPTION_MAX characters of UTF-8. */
bool order_description_valid(const char *s, size_t len);

/* A new order id: a random (version 4) UUID. `out` has room for 37. */
void order_new_id(char *out);

/* The status and reason a payment result moves a NEW order to. */
void order_final_status(const payment_msg *result, const char **status, const char **reason);

/* The payment request that pays `o`. */
void order_payment_request(const order *o, payment_msg *out);

/* What asking to cancel `o` does: a NEW order asks payments (again, if
 * asked before: harmless); a CANCELLED one is cancelled already; a paid
 * one can no longer be cancelled (it can be refunded). */
typedef enum { ORDER_CANCEL_ASK, ORDER_CANCEL_ALREADY, ORDER_CANCEL_TOO_LATE } order_cancel_rule;
order_cancel_rule order_cancel_rule_for(const order *o);

/* The message that asks payments to cancel `o`: payment.cancel, with the
 * request's key (its user), so that it follows the request. */
void order_cancel_request(const order *o, payment_msg *out);

/* What asking to refund `asked` of `o` (0: all that is left) does. OK
 * sets *amount; a refund needs a paid order, cannot take the total past
 * what was paid, and an order has at most ORDER_REFUNDS_MAX. */
typedef enum {
    ORDER_REFUND_OK,
    ORDER_REFUND_NOT_PAID,
    ORDER_REFUND_TOO_MUCH,
    ORDER_REFUND_TOO_MANY,
} order_refund_rule;
order_refund_rule order_refund_rule_for(const order *o, int64_t asked, int64_t *amount);

/* The message that asks payments to give `r` back: refund.requested, with
 * the order's key (its user), so that it follows the order's payment. */
void order_refund_request(const refund *r, payment_msg *out);

/* What a re-drive of a NEW order `o` publishes again: its cancel when its
 * owner asked for one, else its payment request. */
void order_redrive_message(const order *o, payment_msg *out);

/* The order as the API and the live pushes show it. Caller owns it. */
json_t *order_json(const order *o);

/* A refund as the API shows it. Caller owns it. */
json_t *refund_json(const refund *r);

#endif
