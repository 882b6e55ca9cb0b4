/* One error convention for the whole tree, as libuv's UV_E* and
 * uv_strerror: a function that can fail returns 0 (or a count, a length,
 * an id) when it did not, and a negative code when it did: -errno for
 * what the system says (-EINVAL for a bad argument or setting, -ENOMEM,
 * -EINTR, -EIO, -ETIMEDOUT...), or -ERR_* below for what our modules say.
 * Ours start at ERR_BASE, above errno's range, so the two never meet.
 * err_str names any code. Nothing here depends on another module. */
#ifndef SHOP_ERR_H
#define SHOP_ERR_H

#define ERR_BASE 1000

/* Our codes (negated on return). */
enum {
    /* The database (db.h). */
    DB_UNAVAILABLE = ERR_BASE, /* cannot reach the server, or it went away */
    DB_UNIQUE,                 /* unique_violation (23505) */
    DB_CHECK,                  /* check_violation (23514) */
    DB_RANGE,                  /* numeric_value_out_of_range (22003) */
    DB_CONFLICT,               /* serialization failure or deadlock: retry */
    DB_FAILED,                 /* anything else: a bug, bad SQL, or bad data */
    DB_SYSTEMIC,               /* the database refuses every caller alike: a
                                * schema, privilege, limit or disk failure */
    DB_REFUSED,                /* the server turned the connection away: a
                                * wrong password, role or database name, no
                                * pg_hba entry, or a connection string it
                                * cannot read */
    /* Why a token was refused (auth.h). */
    AUTH_MALFORMED = ERR_BASE + 100, /* not three base64url parts of JSON, too long */
    AUTH_ALGORITHM,                  /* a header asking for anything but EdDSA */
    AUTH_SIGNATURE,                  /* not signed by our key */
    AUTH_AUDIENCE,                   /* for another audience, or another issuer */
    AUTH_EXPIRED,                    /* past its exp, or issued in the future */
    AUTH_CLAIMS,                     /* a claim missing or of the wrong shape */
    AUTH_MISSING,                    /* no token at all */
    ERR_END
};

/* A short description of any return code: "ok" for 0 and above, ours,
 * else strerror's for -errno. Static text, thread-safe. */
const char *err_str(int rc);

#endif
