#include "lib/auth.h"
#include "lib/valid.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define B64URL sodium_base64_VARIANT_URLSAFE_NO_PADDING
#define B64STD sodium_base64_VARIANT_ORIGINAL
#define LEEWAY_S 5 /* clocks of one machine or a few: seconds, not minutes */

int auth_init(void)
{
    return sodium_init() < 0 ? -EIO : 0; /* 1: already done, fine */
}

void auth_key_generate(auth_key *k)
{
    crypto_sign_keypair(k->pk, k->sk);
    k->has_sk = true;
}

void auth_key_from_seed(auth_key *k, const unsigned char seed[32])
{
    crypto_sign_seed_keypair(k->pk, k->sk, seed);
    k->has_sk = true;
}

void auth_key_secret_text(const auth_key *k, char *out)
{
    sodium_bin2base64(out, AUTH_KEY_B64_MAX, k->sk, sizeof k->sk, B64STD);
}

void auth_key_public_text(const auth_key *k, char *out)
{
    sodium_bin2base64(out, AUTH_KEY_B64_MAX, k->pk, sizeof k->pk, B64STD);
}

static int decode_exact(const char *text, unsigned char *out, size_t want, int variant)
{
    size_t got = 0;
    const char *end = NULL;
    if (sodium_base642bin(out, want, text, strlen(text), " \n\r\t", &got, &end, variant) != 0 ||
        got != want || (end && *end != '\0'))
        return -EINVAL;
    return 0;
}

int auth_key_from_secret_text(auth_key *k, const char *text)
{
    memset(k, 0, sizeof *k);
    unsigned char seed[crypto_sign_SEEDBYTES], sk[crypto_sign_SECRETKEYBYTES];
    /* libsodium's secret key is the seed and the public key: both halves
     * must agree, or every token signed would fail to verify. */
    if (decode_exact(text, k->sk, sizeof k->sk, B64STD) < 0 ||
        crypto_sign_ed25519_sk_to_seed(seed, k->sk) != 0 ||
        crypto_sign_seed_keypair(k->pk, sk, seed) != 0 ||
        sodium_memcmp(sk, k->sk, sizeof sk) != 0) {
        sodium_memzero(seed, sizeof seed);
        sodium_memzero(sk, sizeof sk);
        memset(k, 0, sizeof *k);
        return -EINVAL;
    }
    sodium_memzero(seed, sizeof seed);
    sodium_memzero(sk, sizeof sk);
    k->has_sk = true;
    return 0;
}

int auth_key_from_public_text(auth_key *k, const char *text)
{
    memset(k, 0, sizeof *k);
    return decode_exact(text, k->pk, sizeof k->pk, B64STD);
}

const char *auth_role_name(auth_role r)
{
    return r == AUTH_OPERATOR ? "operator" : "user";
}

/* base64url of `len` bytes; caller frees. */
static char *b64url(const void *data, size_t len)
{
    size_t cap = sodium_base64_ENCODED_LEN(len, B64URL);
    char *out = malloc(cap);
    if (out)
        sodium_bin2base64(out, cap, data, len, B64URL);
    return out;
}

char *auth_sign(const auth_key *k, const auth_claims *c, const char *audience)
{
    if (!k->has_sk)
        return NULL;
    char kid[AUTH_KEY_B64_MAX];
    auth_key_public_text(k, kid);
    kid[8] = '\0'; /* which key, for a future rotation; never trusted */
    json_t *header = json_pack("{s:s, s:s, s:s}", "alg", "EdDSA", "typ", "JWT", "kid", kid);
    json_t *claims = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:s}", "iss", AUTH_ISSUER, "aud",
                               audience, "sub", c->sub, "role", auth_role_name(c->role), "iat",
                               (json_int_t)c->iat, "exp", (json_int_t)c->exp, "jti", c->jti);
    char *h = header ? json_dumps(header, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    char *p = claims ? json_dumps(claims, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(header);
    json_decref(claims);
    char *h64 = h ? b64url(h, strlen(h)) : NULL, *p64 = p ? b64url(p, strlen(p)) : NULL;
    char *token = NULL, *signing = NULL;
    if (h64 && p64 && asprintf(&signing, "%s.%s", h64, p64) >= 0) {
        unsigned char sig[crypto_sign_BYTES];
        crypto_sign_detached(sig, NULL, (const unsigned char *)signing, strlen(signing), k->sk);
        char *s64 = b64url(sig, sizeof sig);
        if (s64 && asprintf(&token, "%s.%s", signing, s64) < 0)
            token = NULL;
        free(s64);
    }
    free(h), free(p), free(h64), free(p64), free(signing);
    return token;
}

/* Decodes one base64url part into a NUL-terminated buffer; caller frees.
 * Only the canonical form is accepted: libsodium 1.0.18's decoder takes
 * some bytes outside the alphabet for letters of it (0xDF for '_', found by
 * fuzz_token) and ignores the unused bits of the last character, so one
 * token would have many spellings. Each part must be exactly what encoding
 * its bytes gives back. */
static unsigned char *part(const char *s, size_t len, size_t *out_len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (size_t i = 0; i < len; i++)
        if (!s[i] || !strchr(alphabet, s[i]))
            return NULL;
    unsigned char *out = malloc(len + 1);
    size_t got = 0;
    const char *end = NULL;
    if (!out || sodium_base642bin(out, len, s, len, NULL, &got, &end, B64URL) != 0 ||
        end != s + len) {
        free(out);
        return NULL;
    }
    char *again = b64url(out, got);
    bool canonical = again && strlen(again) == len && memcmp(again, s, len) == 0;
    free(again);
    if (!canonical) {
        free(out);
        return NULL;
    }
    out[got] = '\0';
    *out_len = got;
    return out;
}

static json_t *json_part(const char *s, size_t len)
{
    size_t n = 0;
    unsigned char *raw = part(s, len, &n);
    json_t *j = raw ? json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, NULL) : NULL;
    free(raw);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

static bool audience_matches(json_t *aud, const char *audience)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), audience) == 0;
    size_t i;
    json_t *v;
    json_array_foreach(aud, i, v) if (json_is_string(v) &&
                                      strcmp(json_string_value(v), audience) == 0) return true;
    return false;
}

int auth_verify(const auth_key *k, const char *token, const char *audience, int64_t now,
                auth_claims *out)
{
    memset(out, 0, sizeof *out);
    size_t len = token ? strnlen(token, AUTH_TOKEN_MAX + 1) : 0;
    if (len == 0 || len > AUTH_TOKEN_MAX)
        return -AUTH_MALFORMED;
    const char *dot1 = strchr(token, '.'), *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    if (!dot1 || !dot2 || strchr(dot2 + 1, '.') || dot1 == token || dot2 == dot1 + 1 ||
        dot2[1] == '\0')
        return -AUTH_MALFORMED;

    /* The header first: only EdDSA, whatever else it says. */
    json_t *header = json_part(token, (size_t)(dot1 - token));
    if (!header)
        return -AUTH_MALFORMED;
    const char *alg = json_string_value(json_object_get(header, "alg"));
    bool eddsa = alg && strcmp(alg, "EdDSA") == 0 && !json_object_get(header, "crit");
    json_decref(header);
    if (!eddsa)
        return -AUTH_ALGORITHM;

    size_t sig_len = 0;
    unsigned char *sig = part(dot2 + 1, strlen(dot2 + 1), &sig_len);
    bool signed_by_us = sig && sig_len == crypto_sign_BYTES &&
                        crypto_sign_verify_detached(sig, (const unsigned char *)token,
                                                    (size_t)(dot2 - token), k->pk) == 0;
    free(sig);
    if (!signed_by_us)
        return -AUTH_SIGNATURE;

    json_t *claims = json_part(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    if (!claims)
        return -AUTH_MALFORMED;
    int rc = 0;
    const char *iss = json_string_value(json_object_get(claims, "iss"));
    const char *sub = json_string_value(json_object_get(claims, "sub"));
    const char *role = json_string_value(json_object_get(claims, "role"));
    const char *jti = json_string_value(json_object_get(claims, "jti"));
    json_t *iat = json_object_get(claims, "iat"), *exp = json_object_get(claims, "exp");
    if (!iss || strcmp(iss, AUTH_ISSUER) != 0 ||
        !audience_matches(json_object_get(claims, "aud"), audience))
        rc = -AUTH_AUDIENCE;
    else if (!sub || !valid_user_id(sub) || !role ||
             (strcmp(role, "user") != 0 && strcmp(role, "operator") != 0) ||
             !json_is_integer(iat) || !json_is_integer(exp) || (jti && strlen(jti) >= 33))
        rc = -AUTH_CLAIMS;
    else if (json_integer_value(exp) <= now - LEEWAY_S || json_integer_value(iat) > now + LEEWAY_S)
        rc = -AUTH_EXPIRED;
    if (rc == 0) {
        snprintf(out->sub, sizeof out->sub, "%s", sub);
        out->role = strcmp(role, "operator") == 0 ? AUTH_OPERATOR : AUTH_USER;
        out->iat = json_integer_value(iat);
        out->exp = json_integer_value(exp);
        snprintf(out->jti, sizeof out->jti, "%s", jti ? jti : "");
    }
    json_decref(claims);
    return rc;
}

typedef struct cache_slot {
    pthread_mutex_t lock;
    unsigned char key[crypto_generichash_BYTES]; /* hash of token and audience */
    bool used;
    int64_t until; /* answered from here while now < until */
    auth_claims claims;
} cache_slot;

struct auth_cache {
    cache_slot *slots;
    unsigned mask;
    _Atomic uint64_t hits, misses;
};

auth_cache *auth_cache_new(int slots)
{
    auth_cache *c = calloc(1, sizeof *c);
    if (!c || slots < 1 || (slots & (slots - 1)) != 0 ||
        !(c->slots = calloc((size_t)slots, sizeof *c->slots))) {
        free(c);
        return NULL;
    }
    c->mask = (unsigned)slots - 1;
    for (int i = 0; i < slots; i++)
        pthread_mutex_init(&c->slots[i].lock, NULL);
    return c;
}

void auth_cache_free(auth_cache *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i <= c->mask; i++)
        pthread_mutex_destroy(&c->slots[i].lock);
    free(c->slots);
    free(c);
}

int auth_verify_cached(auth_cache *c, const auth_key *k, const char *token, const char *audience,
                       int64_t now, auth_claims *out)
{
    if (!c)
        return auth_verify(k, token, audience, now, out);
    /* The audience is hashed in too: a token checked for one audience
     * is not thereby good for another. The NUL keeps "ab"+"c" apart from
     * "a"+"bc". */
    unsigned char key[crypto_generichash_BYTES];
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof key);
    crypto_generichash_update(&st, (const unsigned char *)token, strlen(token) + 1);
    crypto_generichash_update(&st, (const unsigned char *)audience, strlen(audience));
    crypto_generichash_final(&st, key, sizeof key);
    uint32_t index;
    memcpy(&index, key, sizeof index);
    cache_slot *s = &c->slots[index & c->mask];

    pthread_mutex_lock(&s->lock);
    bool hit = s->used && now < s->until && sodium_memcmp(s->key, key, sizeof key) == 0;
    if (hit)
        *out = s->claims;
    pthread_mutex_unlock(&s->lock);
    if (hit) {
        atomic_fetch_add(&c->hits, 1);
        return 0;
    }
    atomic_fetch_add(&c->misses, 1);
    int rc = auth_verify(k, token, audience, now, out);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&s->lock);
    memcpy(s->key, key, sizeof key);
    s->used = true;
    /* auth_verify refuses from exp + LEEWAY_S on; time only moves on, so
     * the other checks (iat not in the future) hold from now until then. */
    s->until = out->exp + LEEWAY_S;
    s->claims = *out;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

void auth_cache_counts(auth_cache *c, uint64_t *hits, uint64_t *misses)
{
    *hits = c ? atomic_load(&c->hits) : 0;
    *misses = c ? atomic_load(&c->misses) : 0;
}
