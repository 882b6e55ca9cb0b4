/* The input rules every service shares (docs/architecture.md,
 * "Conventions"). Pure functions. */
#ifndef SHOP_VALID_H
#define SHOP_VALID_H

#include <stdbool.h>
#include <stdint.h>

#define VALID_USER_ID_MAX 64
#define VALID_AMOUNT_MAX 1000000000000LL /* 10^12 minor units */
#define VALID_IDEM_KEY_MAX 255

/* 1-64 characters of [A-Za-z0-9_.-]. */
bool valid_user_id(const char *s);

/* An integer count of minor units from 1 to 10^12. */
bool valid_amount(int64_t amount);

/* An Idempotency-Key: 1-255 printable ASCII characters, no spaces. */
bool valid_idempotency_key(const char *s);

/* Makes `s` valid UTF-8 in place: every byte that does not belong to a
 * well-formed sequence (overlong forms, surrogates and code points past
 * U+10FFFF included) becomes '?'. Returns how many bytes it replaced. For
 * text that echoes what a client sent (a path in an error message): JSON
 * must be UTF-8, and jansson refuses anything else. */
int valid_utf8_repair(char *s);

#endif
