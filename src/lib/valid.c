#include "lib/valid.h"

#include <string.h>

bool valid_user_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > VALID_USER_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

bool valid_amount(int64_t amount)
{
    return amount >= 1 && amount <= VALID_AMOUNT_MAX;
}

bool valid_idempotency_key(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > VALID_IDEM_KEY_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] > '~')
            return false;
    return true;
}
