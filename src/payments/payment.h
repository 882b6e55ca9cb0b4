/* The payment rule: a request is paid when the account exists and holds
 * enough; otherwise it fails with the reason. Pure. */
#ifndef PAYMENTS_PAYMENT_H
#define PAYMENTS_PAYMENT_H

#include "lib/msg.h"

#include <stdbool.h>

#define REASON_INSUFFICIENT_FUNDS "insufficient_funds"
#define REASON_ACCOUNT_NOT_FOUND "account_not_found"

/* Fills `result` (payment.completed or payment.failed) for `req`, given
 * whether the conditional debit took the money and whether the account
 * exists. */
void payment_decide(const payment_msg *req, bool debited, bool has_account, payment_msg *result);

#endif
