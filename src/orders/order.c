#include "orders/order.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
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

void order_new_id(char *out)
{
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b)
        abort(); /* the kernel's random source does not fail once booted */
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    sprintf(out, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
            b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
            b[15]);
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

order_cancel_rule order_cancel_rule_for(const order *o)
{
    if (strcmp(o->status, "NEW") == 0)
        return ORDER_CANCEL_ASK;
    return strcmp(o->status, "CANCELLED") == 0 ? ORDER_CANCEL_ALREADY : ORDER_CANCEL_TOO_LATE;
}

void order_cancel_request(const order *o, payment_msg *out)
{
    order_payment_request(o, out);
    out->type = MSG_PAYMENT_CANCEL;
}

order_refund_rule order_refund_rule_for(const order *o, int64_t asked, int64_t *amount)
{
    if (strcmp(o->status, "FINISHED") != 0 && strcmp(o->status, "REFUNDED") != 0)
        return ORDER_REFUND_NOT_PAID;
    int64_t left = o->amount - o->refund_reserved;
    if (left == 0 || asked > left)
        return ORDER_REFUND_TOO_MUCH;
    if (o->refund_count >= ORDER_REFUNDS_MAX)
        return ORDER_REFUND_TOO_MANY;
    *amount = asked ? asked : left;
    return ORDER_REFUND_OK;
}

void order_refund_request(const refund *r, payment_msg *out)
{
    *out = (payment_msg){.type = MSG_REFUND_REQUESTED, .amount = r->amount};
    snprintf(out->order_id, sizeof out->order_id, "%s", r->order_id);
    snprintf(out->user_id, sizeof out->user_id, "%s", r->user_id);
    snprintf(out->refund_id, sizeof out->refund_id, "%s", r->id);
}

void order_redrive_message(const order *o, payment_msg *out)
{
    if (o->cancel_requested)
        order_cancel_request(o, out);
    else
        order_payment_request(o, out);
}

json_t *order_json(const order *o)
{
    json_t *j = json_pack("{s:s, s:s, s:I, s:s, s:s, s:o, s:b, s:I, s:s, s:s}", "id", o->id,
                          "user_id", o->user_id, "amount", (json_int_t)o->amount, "description",
                          o->description, "status", o->status, "reason",
                          o->reason[0] ? json_string(o->reason) : json_null(), "cancel_requested",
                          o->cancel_requested, "refunded_amount", (json_int_t)o->refunded_amount,
                          "created_at", o->created_at, "updated_at", o->updated_at);
    /* Its trace, when one was recorded (sampled): where to see it. */
    trace_ctx t;
    if (j && trace_parse(o->traceparent, &t) == 0 && t.sampled) {
        char id[33];
        trace_hex(t.trace_id, 16, id);
        json_object_set_new(j, "trace_id", json_string(id));
    }
    return j;
}

json_t *refund_json(const refund *r)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:o, s:s, s:s}", "id", r->id, "order_id", r->order_id,
                     "amount", (json_int_t)r->amount, "status", r->status, "reason",
                     r->reason[0] ? json_string(r->reason) : json_null(), "created_at",
                     r->created_at, "updated_at", r->updated_at);
}
