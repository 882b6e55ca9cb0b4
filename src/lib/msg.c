#include "lib/msg.h"
#include "lib/valid.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

static const char *const type_names[] = {
    "payment.requested", "payment.completed", "payment.failed", "payment.cancel",
    "refund.requested",  "refund.completed",  "refund.failed",
};
enum { NTYPES = sizeof type_names / sizeof *type_names };

const char *msg_type_name(msg_type t)
{
    return type_names[t];
}

bool msg_is_refund(msg_type t)
{
    return t == MSG_REFUND_REQUESTED || t == MSG_REFUND_COMPLETED || t == MSG_REFUND_FAILED;
}

static bool has_reason(msg_type t)
{
    return t == MSG_PAYMENT_FAILED || t == MSG_REFUND_FAILED;
}

bool valid_uuid(const char *s)
{
    if (strlen(s) != MSG_ORDER_ID_LEN)
        return false;
    for (size_t i = 0; i < MSG_ORDER_ID_LEN; i++) {
        char c = s[i];
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (dash ? c != '-' : !hex)
            return false;
    }
    return true;
}

static bool valid_reason(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MSG_REASON_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || s[i] == '_'))
            return false;
    return true;
}

char *msg_encode(const payment_msg *m)
{
    json_t *j =
        json_pack("{s:s, s:i, s:s, s:s, s:I}", "type", type_names[m->type], "version", MSG_VERSION,
                  "order_id", m->order_id, "user_id", m->user_id, "amount", (json_int_t)m->amount);
    if (j && has_reason(m->type))
        json_object_set_new(j, "reason", json_string(m->reason));
    if (j && msg_is_refund(m->type))
        json_object_set_new(j, "refund_id", json_string(m->refund_id));
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    return text;
}

int msg_decode(const void *data, size_t len, payment_msg *out, char *why, size_t whylen)
{
    int rc = -EINVAL;
    json_error_t err;
    json_t *j = data ? json_loadb(data, len, JSON_REJECT_DUPLICATES, &err) : NULL;
    const char *type = NULL, *order_id = NULL, *user_id = NULL, *reason = NULL, *refund_id = NULL;
    json_int_t version = 0, amount = 0;
    memset(out, 0, sizeof *out);
    if (!j) {
        snprintf(why, whylen, "not JSON: %s", data ? err.text : "empty message");
        goto done;
    }
    if (json_unpack_ex(j, &err, 0, "{s:s, s:I}", "type", &type, "version", &version) < 0) {
        snprintf(why, whylen, "no type or version: %s", err.text);
        goto done;
    }
    size_t t = 0;
    while (t < NTYPES && strcmp(type, type_names[t]) != 0)
        t++;
    if (t == NTYPES) {
        snprintf(why, whylen, "unknown type %.64s", type);
        goto done;
    }
    if (version != MSG_VERSION) {
        snprintf(why, whylen, "unknown version %lld of %s", (long long)version, type);
        goto done;
    }
    out->type = (msg_type)t;
    if (json_unpack_ex(j, &err, 0, "{s:s, s:s, s:I, s?:s, s?:s}", "order_id", &order_id, "user_id",
                       &user_id, "amount", &amount, "reason", &reason, "refund_id",
                       &refund_id) < 0) {
        snprintf(why, whylen, "bad %s: %s", type, err.text);
        goto done;
    }
    if (!valid_uuid(order_id) || !valid_user_id(user_id) || !valid_amount(amount)) {
        snprintf(why, whylen, "bad %s: invalid order_id, user_id or amount", type);
        goto done;
    }
    if (has_reason(out->type) && (!reason || !valid_reason(reason))) {
        snprintf(why, whylen, "%s without a valid reason", type);
        goto done;
    }
    if (msg_is_refund(out->type) && (!refund_id || !valid_uuid(refund_id))) {
        snprintf(why, whylen, "%s without a valid refund_id", type);
        goto done;
    }
    snprintf(out->order_id, sizeof out->order_id, "%s", order_id);
    snprintf(out->user_id, sizeof out->user_id, "%s", user_id);
    out->amount = amount;
    if (has_reason(out->type))
        snprintf(out->reason, sizeof out->reason, "%s", reason);
    if (msg_is_refund(out->type))
        snprintf(out->refund_id, sizeof out->refund_id, "%s", refund_id);
    rc = 0;
done:
    /* A reason cut at its buffer (or at %.64s) may end inside a character
     * of the message's own text: the dead-letter row must be UTF-8. */
    if (rc < 0)
        valid_utf8_repair(why);
    json_decref(j);
    return rc;
}
