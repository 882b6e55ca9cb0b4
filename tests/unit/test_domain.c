/* The orders domain rules: pure, no servers. (The payment rule lives in
 * one place, the payment_batch function, and is tested against the real
 * database: tests/integration.) */
#include "orders/order.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

static payment_msg request(void)
{
    payment_msg r = {.type = MSG_PAYMENT_REQUESTED, .amount = 30};
    strcpy(r.order_id, "0b9f3c2e-8d4a-4c1e-9a7b-2f6d5e4c3b2a");
    strcpy(r.user_id, "alice");
    return r;
}

Test(order, final_status_follows_the_result)
{
    payment_msg m = request();
    const char *status, *reason;
    m.type = MSG_PAYMENT_COMPLETED;
    order_final_status(&m, &status, &reason);
    cr_assert_str_eq(status, "FINISHED");
    cr_assert_str_eq(reason, "");
    m.type = MSG_PAYMENT_FAILED;
    strcpy(m.reason, "insufficient_funds");
    order_final_status(&m, &status, &reason);
    cr_assert_str_eq(status, "CANCELLED");
    cr_assert_str_eq(reason, "insufficient_funds");
}

Test(order, payment_request_carries_the_order)
{
    order o = {.amount = 99};
    strcpy(o.id, "0b9f3c2e-8d4a-4c1e-9a7b-2f6d5e4c3b2a");
    strcpy(o.user_id, "bob");
    payment_msg m;
    order_payment_request(&o, &m);
    cr_assert_eq(m.type, MSG_PAYMENT_REQUESTED);
    cr_assert_str_eq(m.order_id, o.id);
    cr_assert_str_eq(m.user_id, "bob");
    cr_assert_eq(m.amount, 99);
}

Test(order, only_a_new_order_is_cancelled_and_a_paid_one_never)
{
    order o = {.amount = 5};
    strcpy(o.status, "NEW");
    cr_assert_eq(order_cancel_rule_for(&o), ORDER_CANCEL_ASK);
    o.cancel_requested = true; /* asked before: asking again is harmless */
    cr_assert_eq(order_cancel_rule_for(&o), ORDER_CANCEL_ASK);
    strcpy(o.status, "CANCELLED");
    cr_assert_eq(order_cancel_rule_for(&o), ORDER_CANCEL_ALREADY);
    strcpy(o.status, "FINISHED");
    cr_assert_eq(order_cancel_rule_for(&o), ORDER_CANCEL_TOO_LATE);
}

Test(order, a_redrive_sends_the_cancel_once_one_was_asked)
{
    order o = {.amount = 42};
    strcpy(o.id, "0b9f3c2e-8d4a-4c1e-9a7b-2f6d5e4c3b2a");
    strcpy(o.user_id, "carol");
    strcpy(o.status, "NEW");
    payment_msg m;
    order_redrive_message(&o, &m);
    cr_assert_eq(m.type, MSG_PAYMENT_REQUESTED);
    o.cancel_requested = true;
    order_redrive_message(&o, &m);
    cr_assert_eq(m.type, MSG_PAYMENT_CANCEL);
    cr_assert_str_eq(m.order_id, o.id);
    cr_assert_str_eq(m.user_id, "carol", "the request's key: it follows the request");
    cr_assert_eq(m.amount, 42);
    char *text = msg_encode(&m);
    payment_msg back;
    char why[128];
    cr_assert_eq(msg_decode(text, strlen(text), &back, why, sizeof why), 0, "%s", why);
    cr_assert_eq(back.type, MSG_PAYMENT_CANCEL);
    cr_assert_str_eq(msg_type_name(back.type), "payment.cancel");
    free(text);
}

Test(order, descriptions)
{
    cr_assert(order_description_valid("", 0));
    cr_assert(order_description_valid("a book", 6));
    cr_assert_not(order_description_valid("a\0b", 3), "an embedded NUL is refused");
    char s[1100];
    memset(s, 'x', 500);
    s[500] = '\0';
    cr_assert(order_description_valid(s, 500));
    s[500] = 'x';
    s[501] = '\0';
    cr_assert_not(order_description_valid(s, 501));
    /* 500 two-byte characters are 1000 bytes and still 500 characters. */
    for (int i = 0; i < 500; i++)
        memcpy(s + 2 * i, "\xc3\xa9", 2);
    s[1000] = '\0';
    cr_assert(order_description_valid(s, 1000));
}

Test(order, a_refund_needs_a_paid_order_and_never_exceeds_it)
{
    order o = {.amount = 100};
    int64_t amount = -1;
    strcpy(o.status, "NEW");
    cr_assert_eq(order_refund_rule_for(&o, 10, &amount), ORDER_REFUND_NOT_PAID);
    strcpy(o.status, "CANCELLED");
    cr_assert_eq(order_refund_rule_for(&o, 10, &amount), ORDER_REFUND_NOT_PAID);
    strcpy(o.status, "FINISHED");
    cr_assert_eq(order_refund_rule_for(&o, 0, &amount), ORDER_REFUND_OK);
    cr_assert_eq(amount, 100, "no amount: all that is left");
    o.refund_reserved = 70; /* refunds pending or done */
    cr_assert_eq(order_refund_rule_for(&o, 31, &amount), ORDER_REFUND_TOO_MUCH);
    cr_assert_eq(order_refund_rule_for(&o, 30, &amount), ORDER_REFUND_OK);
    cr_assert_eq(amount, 30);
    cr_assert_eq(order_refund_rule_for(&o, 0, &amount), ORDER_REFUND_OK);
    cr_assert_eq(amount, 30);
    o.refund_count = ORDER_REFUNDS_MAX;
    cr_assert_eq(order_refund_rule_for(&o, 1, &amount), ORDER_REFUND_TOO_MANY);
    o.refund_reserved = 100;
    strcpy(o.status, "REFUNDED");
    cr_assert_eq(order_refund_rule_for(&o, 0, &amount), ORDER_REFUND_TOO_MUCH);
}

Test(order, a_refund_request_follows_its_order)
{
    refund r = {.amount = 25};
    strcpy(r.id, "5d0c1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f");
    strcpy(r.order_id, "0b9f3c2e-8d4a-4c1e-9a7b-2f6d5e4c3b2a");
    strcpy(r.user_id, "dave");
    payment_msg m;
    order_refund_request(&r, &m);
    cr_assert_eq(m.type, MSG_REFUND_REQUESTED);
    cr_assert_str_eq(m.refund_id, r.id);
    cr_assert_str_eq(m.order_id, r.order_id);
    cr_assert_str_eq(m.user_id, "dave", "the order's key: it follows the payment");
    cr_assert_eq(m.amount, 25);
}

/* An order's JSON names its trace when the trace was recorded (sampled),
 * and nothing when it was not, or there is none. */
Test(order, its_json_names_its_trace_only_when_recorded)
{
    order o = {.amount = 1};
    snprintf(o.status, sizeof o.status, "NEW");
    json_t *j = order_json(&o);
    cr_assert_null(json_object_get(j, "trace_id"), "no trace");
    json_decref(j);
    snprintf(o.traceparent, sizeof o.traceparent,
             "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
    j = order_json(&o);
    cr_assert_null(json_object_get(j, "trace_id"), "a trace not recorded");
    json_decref(j);
    o.traceparent[TRACE_PARENT_LEN - 1] = '1';
    j = order_json(&o);
    cr_assert_str_eq(json_string_value(json_object_get(j, "trace_id")),
                     "4bf92f3577b34da6a3ce929d0e0e4736");
    json_decref(j);
}
