#include "payments/payment.h"

#include <stdio.h>

void payment_decide(const payment_msg *req, bool debited, bool has_account, payment_msg *result)
{
    *result = *req;
    result->reason[0] = '\0';
    if (debited) {
        result->type = MSG_PAYMENT_COMPLETED;
        return;
    }
    result->type = MSG_PAYMENT_FAILED;
    snprintf(result->reason, sizeof result->reason, "%s",
             has_account ? REASON_INSUFFICIENT_FUNDS : REASON_ACCOUNT_NOT_FOUND);
}
