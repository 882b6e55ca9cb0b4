/* An account as the payments service keeps it. */
#ifndef PAYMENTS_ACCOUNT_H
#define PAYMENTS_ACCOUNT_H

#include "lib/valid.h"

#include <stdint.h>

typedef struct account {
    char user_id[VALID_USER_ID_MAX + 1];
    int64_t balance; /* minor units, never negative */
    char created_at[40];
    char updated_at[40];
} account;

#endif
