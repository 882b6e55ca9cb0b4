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

/* The length of the well-formed UTF-8 sequence at p (RFC 3629, table 3-7 of
 * the Unicode standard), or 0. Hand-written: neither jansson nor libc
 * exposes a validator that says where a string goes wrong. */
static int utf8_sequence(const unsigned char *p)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    int n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0; /* no overlong forms */
        if (c == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F; /* nothing past U+10FFFF */
    } else
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (int i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

int valid_utf8_repair(char *s)
{
    int replaced = 0;
    for (unsigned char *p = (unsigned char *)s; *p;) {
        int n = utf8_sequence(p);
        if (n) {
            p += n;
        } else {
            *p++ = '?';
            replaced++;
        }
    }
    return replaced;
}
