#include "lib/err.h"

#include <string.h>

const char *err_str(int rc)
{
    if (rc >= 0)
        return "ok";
    switch (-rc) {
    case DB_UNAVAILABLE:
        return "database unavailable";
    case DB_UNIQUE:
        return "unique violation";
    case DB_CHECK:
        return "check violation";
    case DB_RANGE:
        return "value out of range";
    case DB_CONFLICT:
        return "serialization conflict";
    case DB_FAILED:
        return "database error";
    case DB_SYSTEMIC:
        return "database failing for every caller";
    case DB_REFUSED:
        return "connection refused by the server (password, role, database)";
    case AUTH_MALFORMED:
        return "malformed token";
    case AUTH_ALGORITHM:
        return "unsupported algorithm";
    case AUTH_SIGNATURE:
        return "bad signature";
    case AUTH_AUDIENCE:
        return "wrong audience or issuer";
    case AUTH_EXPIRED:
        return "token expired";
    case AUTH_CLAIMS:
        return "bad claims";
    case AUTH_MISSING:
        return "no token";
    }
    if (-rc >= ERR_BASE)
        return "unknown error";
    /* strerrordesc_np: static text, unlike strerror (not thread-safe). */
    const char *s = strerrordesc_np(-rc);
    return s ? s : "unknown error";
}
