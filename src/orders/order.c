#include "orders/order.h"

#include <stdio.h>
#include <string.h>

bool order_description_valid(const char *s, size_t len)
{
    if (strlen(s) != len)
        return false;
    size_t chars = 0;
    for (const char *p = s; *p; p++)
        chars += ((unsigned char)*p & 0xC0) != 0x80; /* count UTF-8 lead bytes */
    return chars <= ORDER_DESCRIPTION_MAX;
}

void order_final_status(const payment_msg *result, const char **status, const char **reason)
{
    if (result->type == MSG_PAYMENT_COMPLETED) {
        *status = "FINISHED";
        *reason = "";
    } else {
        *status = "CANCELLED";
        *reason = result->reason;
    }
}

void order_payment_request(const order *o, payment_msg *out)
{
    *out = (payment_msg){.type = MSG_PAYMENT_REQUESTED, .amount = o->amount};
    snprintf(out->order_id, sizeof out->order_id, "%s", o->id);
    snprintf(out->user_id, sizeof out->user_id, "%s", o->user_id);
}
