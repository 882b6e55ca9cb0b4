/* Signed tokens (docs/architecture.md, "The parts"): identity signs, orders and payments verify
 * in-process, with no call to identity per request. A token is a JWT (RFC
 * 7519) in JWS compact form signed with Ed25519 ("EdDSA", RFC 8037) by
 * libsodium: base64url(header).base64url(claims).base64url(signature).
 * Verification accepts exactly that algorithm (never "none", never an HMAC
 * keyed with the public key), one key, the audience asked for, and a token
 * not expired; anything else is refused with the reason. The format is
 * done by hand on libsodium and jansson: Debian's libjwt 1.10 has no EdDSA,
 * and the part to get right (what a verifier accepts) is a few lines. */
#ifndef SHOP_AUTH_H
#define SHOP_AUTH_H

#include "lib/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTH_ISSUER "shop-identity"
#define AUTH_COOKIE "shop_session" /* the browser's copy of the token */
#define AUTH_TOKEN_MAX 2048        /* longer is refused unread */
#define AUTH_KEY_B64_MAX 128

typedef enum { AUTH_USER, AUTH_OPERATOR } auth_role;

typedef struct auth_claims {
    char sub[65]; /* the user id */
    auth_role role;
    int64_t iat, exp; /* seconds since the epoch */
    char jti[33];     /* a random id, for the logs */
} auth_claims;

/* An Ed25519 key pair; `sk` is set only where tokens are signed. */
typedef struct auth_key {
    unsigned char pk[32];
    unsigned char sk[64];
    bool has_sk;
} auth_key;

/* Initialises libsodium once; 0, or -EIO when it cannot. Thread-safe. */
int auth_init(void);

/* A new key pair. */
void auth_key_generate(auth_key *k);

/* The key pair of a 32-byte seed (tests and fuzzing: a fixed key). */
void auth_key_from_seed(auth_key *k, const unsigned char seed[32]);

/* Keys as text (standard base64 of the raw bytes): the secret key's 64
 * bytes (the public key is derived from them) and the public key's 32.
 * `out` has room for AUTH_KEY_B64_MAX. Parsing returns 0 or -EINVAL. */
void auth_key_secret_text(const auth_key *k, char *out);
void auth_key_public_text(const auth_key *k, char *out);
int auth_key_from_secret_text(auth_key *k, const char *text);
int auth_key_from_public_text(auth_key *k, const char *text);

/* Signs `c` for `audience`; the token, or NULL without memory. Caller
 * frees. */
char *auth_sign(const auth_key *k, const auth_claims *c, const char *audience);

/* Checks `token` against `k` for `audience` at time `now` (seconds) and
 * fills `out`. Returns 0 or the reason it was refused. */
int auth_verify(const auth_key *k, const char *token, const char *audience, int64_t now,
                auth_claims *out);

/* ---- tokens verified lately ----
 * A client sends the same token with every request for up to its 15
 * minutes; checking its Ed25519 signature each time is most of what a read
 * costs (about 55 µs). The cache remembers tokens that verified, keyed by
 * a BLAKE2b-256 hash of the token and the audience (so a different token,
 * even one byte, is a different key: no token gets in by looking like
 * another), and answers for one only until the time auth_verify would
 * refuse it. Refused tokens are never kept. */
typedef struct auth_cache auth_cache;

/* A cache of `slots` entries (a power of two; one token per slot, the
 * newest wins). NULL without memory. */
auth_cache *auth_cache_new(int slots);
void auth_cache_free(auth_cache *c);

/* auth_verify, through the cache (NULL: none). Thread-safe. */
int auth_verify_cached(auth_cache *c, const auth_key *k, const char *token, const char *audience,
                       int64_t now, auth_claims *out);

/* Lookups answered from the cache, and those that verified a signature. */
void auth_cache_counts(auth_cache *c, uint64_t *hits, uint64_t *misses);

/* "user", "operator". */
const char *auth_role_name(auth_role r);

#endif
