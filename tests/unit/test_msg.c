#include "lib/msg.h"

#include <jansson.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *ORDER = "0b9f3c2e-8d4a-4c1e-9a7b-2f6d5e4c3b2a";

Test(msg, round_trips_every_type)
{
    payment_msg in = {.type = MSG_PAYMENT_FAILED, .amount = 1250};
    strcpy(in.order_id, ORDER);
    strcpy(in.user_id, "alice");
    strcpy(in.reason, "insufficient_funds");
    char *text = msg_encode(&in);
    cr_assert_str_eq(text,
                     "{\"type\":\"payment.failed\",\"version\":1,\"order_id\":\"0b9f3c2e-8d4a-"
                     "4c1e-9a7b-2f6d5e4c3b2a\",\"user_id\":\"alice\",\"amount\":1250,"
                     "\"reason\":\"insufficient_funds\"}");
    payment_msg out;
    char why[128];
    cr_assert_eq(msg_decode(text, strlen(text), &out, why, sizeof why), 0, "%s", why);
    cr_assert_eq(out.type, MSG_PAYMENT_FAILED);
    cr_assert_str_eq(out.order_id, ORDER);
    cr_assert_str_eq(out.reason, "insufficient_funds");
    cr_assert_eq(out.amount, 1250);
    free(text);

    in.type = MSG_PAYMENT_REQUESTED;
    text = msg_encode(&in);
    cr_assert_null(strstr(text, "reason"), "only payment.failed carries a reason");
    cr_assert_eq(msg_decode(text, strlen(text), &out, why, sizeof why), 0);
    cr_assert_eq(out.type, MSG_PAYMENT_REQUESTED);
    free(text);
}

Test(msg, ignores_unknown_members)
{
    const char *t = "{\"type\":\"payment.completed\",\"version\":1,\"order_id\":\"0b9f3c2e-8d4a-"
                    "4c1e-9a7b-2f6d5e4c3b2a\",\"user_id\":\"u\",\"amount\":5,\"trace\":\"x\"}";
    payment_msg out;
    char why[128];
    cr_assert_eq(msg_decode(t, strlen(t), &out, why, sizeof why), 0, "%s", why);
    cr_assert_eq(out.type, MSG_PAYMENT_COMPLETED);
}

Test(msg, refuses_poison)
{
    const char *bad[] = {
        "",
        "not json",
        "[]",
        "{\"version\":1}",
        "{\"type\":\"payment.exploded\",\"version\":1}",
        "{\"type\":\"payment.requested\",\"version\":2,\"order_id\":\"0b9f3c2e-8d4a-4c1e-9a7b-"
        "2f6d5e4c3b2a\",\"user_id\":\"u\",\"amount\":5}",
        "{\"type\":\"payment.requested\",\"version\":1,\"order_id\":\"nope\",\"user_id\":\"u\","
        "\"amount\":5}",
        "{\"type\":\"payment.requested\",\"version\":1,\"order_id\":\"0b9f3c2e-8d4a-4c1e-9a7b-"
        "2f6d5e4c3b2a\",\"user_id\":\"u\",\"amount\":0}",
        "{\"type\":\"payment.requested\",\"version\":1,\"order_id\":\"0b9f3c2e-8d4a-4c1e-9a7b-"
        "2f6d5e4c3b2a\",\"user_id\":\"u u\",\"amount\":5}",
        "{\"type\":\"payment.failed\",\"version\":1,\"order_id\":\"0b9f3c2e-8d4a-4c1e-9a7b-"
        "2f6d5e4c3b2a\",\"user_id\":\"u\",\"amount\":5}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        payment_msg out;
        char why[128] = "";
        cr_assert_eq(msg_decode(bad[i], strlen(bad[i]), &out, why, sizeof why), -22, "%s", bad[i]);
        cr_assert_neq(why[0], '\0', "a reason is given for %s", bad[i]);
    }
}

Test(msg, uuids)
{
    cr_assert(valid_uuid(ORDER));
    cr_assert(valid_uuid("0B9F3C2E-8D4A-4C1E-9A7B-2F6D5E4C3B2A"));
    cr_assert_not(valid_uuid("0b9f3c2e8d4a4c1e9a7b2f6d5e4c3b2a"));
    cr_assert_not(valid_uuid("0b9f3c2e-8d4a-4c1e-9a7b-2f6d5e4c3b2g"));
    cr_assert_not(valid_uuid(""));
}

Test(msg, a_refund_carries_its_id_and_a_failed_one_its_reason)
{
    payment_msg in = {.type = MSG_REFUND_FAILED, .amount = 300};
    strcpy(in.order_id, ORDER);
    strcpy(in.user_id, "alice");
    strcpy(in.reason, "exceeds_payment");
    strcpy(in.refund_id, "5d0c1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f");
    char *text = msg_encode(&in);
    cr_assert_str_eq(text, "{\"type\":\"refund.failed\",\"version\":1,\"order_id\":\"0b9f3c2e-8d4a-"
                           "4c1e-9a7b-2f6d5e4c3b2a\",\"user_id\":\"alice\",\"amount\":300,"
                           "\"reason\":\"exceeds_payment\",\"refund_id\":\"5d0c1e2f-3a4b-4c5d-8e6f-"
                           "7a8b9c0d1e2f\"}");
    payment_msg out;
    char why[128];
    cr_assert_eq(msg_decode(text, strlen(text), &out, why, sizeof why), 0, "%s", why);
    cr_assert_eq(out.type, MSG_REFUND_FAILED);
    cr_assert_str_eq(out.refund_id, in.refund_id);
    cr_assert_str_eq(out.reason, "exceeds_payment");
    free(text);
    in.type = MSG_REFUND_REQUESTED;
    text = msg_encode(&in);
    cr_assert_null(strstr(text, "reason"));
    cr_assert_eq(msg_decode(text, strlen(text), &out, why, sizeof why), 0, "%s", why);
    cr_assert_eq(out.type, MSG_REFUND_REQUESTED);
    cr_assert(msg_is_refund(out.type));
    cr_assert_not(msg_is_refund(MSG_PAYMENT_CANCEL));
    free(text);

    /* Without its id, or with one that is not a UUID: poison. */
    const char *bad[] = {
        "{\"type\":\"refund.requested\",\"version\":1,\"order_id\":\"0b9f3c2e-8d4a-4c1e-9a7b-"
        "2f6d5e4c3b2a\",\"user_id\":\"u\",\"amount\":5}",
        "{\"type\":\"refund.completed\",\"version\":1,\"order_id\":\"0b9f3c2e-8d4a-4c1e-9a7b-"
        "2f6d5e4c3b2a\",\"user_id\":\"u\",\"amount\":5,\"refund_id\":\"r1\"}",
        "{\"type\":\"refund.failed\",\"version\":1,\"order_id\":\"0b9f3c2e-8d4a-4c1e-9a7b-"
        "2f6d5e4c3b2a\",\"user_id\":\"u\",\"amount\":5,\"refund_id\":\"5d0c1e2f-3a4b-4c5d-8e6f-"
        "7a8b9c0d1e2f\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(msg_decode(bad[i], strlen(bad[i]), &out, why, sizeof why), -EINVAL, "%s",
                     bad[i]);
}

/* An unknown type is quoted in the reason, cut at 64 bytes: a cut inside
 * a character of its own would make the dead-letter insert fail (22021),
 * and the message could be set aside nowhere (issue 24). */
Test(msg, a_reason_that_quotes_the_message_stays_utf8)
{
    char payload[512] = "{\"type\":\"a", why[128];
    for (int i = 0; i < 45; i++)
        strcat(payload, "\xc3\xa9"); /* é after one byte: byte 64 falls inside one */
    strcat(payload, "x\",\"version\":1}");
    payment_msg m;
    cr_assert_lt(msg_decode(payload, strlen(payload), &m, why, sizeof why), 0);
    json_t *s = json_string(why); /* jansson takes valid UTF-8 only */
    cr_assert_not_null(s, "the reason is not UTF-8: %s", why);
    json_decref(s);
    cr_assert(strstr(why, "unknown type"), "%s", why);
}
