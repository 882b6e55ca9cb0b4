/* An order and the rules of its life: NEW, then FINISHED (paid) or
 * CANCELLED (with the reason), and only from NEW. Pure. */
#ifndef ORDERS_ORDER_H
#define ORDERS_ORDER_H

#include "lib/msg.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ORDER_DESCRIPTION_MAX 500

typedef struct order {
    char id[MSG_ORDER_ID_LEN + 1];
    char user_id[VALID_USER_ID_MAX + 1];
    int64_t amount;
    char description[4 * ORDER_DESCRIPTION_MAX + 1]; /* UTF-8 */
    char status[16];
    char reason[MSG_REASON_MAX + 1]; /* "" when none */
    char created_at[40];
    char updated_at[40];
    int64_t seq; /* creation order; the listing's cursor */
} order;

/* A description: `len` bytes (as JSON gave them, so an embedded NUL
 * shows), at most ORDER_DESCRIPTION_MAX characters of UTF-8. */
bool order_description_valid(const char *s, size_t len);

/* A new order id: a random (version 4) UUID. `out` has room for 37. */
void order_new_id(char *out);

/* The status and reason a payment result moves a NEW order to. */
void order_final_status(const payment_msg *result, const char **status, const char **reason);

/* The payment request that pays `o`. */
void order_payment_request(const order *o, payment_msg *out);

/* The order as the API and the live pushes show it. Caller owns it. */
json_t *order_json(const order *o);

#endif
