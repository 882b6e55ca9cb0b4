/* Tokens: what identity signs, orders and payments accept, and every way
 * a forged, expired, misdirected or mangled token is refused. Pure. */
#include "lib/auth.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int64_t NOW = 1795000000;

static auth_key key(void)
{
    cr_assert_eq(auth_init(), 0);
    auth_key k;
    auth_key_generate(&k);
    return k;
}

static auth_claims alice(void)
{
    auth_claims c = {.role = AUTH_USER, .iat = NOW, .exp = NOW + 900};
    strcpy(c.sub, "alice");
    strcpy(c.jti, "0123456789abcdef");
    return c;
}

/* base64url of a string, for hand-made tokens. */
static char *b64(const char *s)
{
    size_t cap = sodium_base64_ENCODED_LEN(strlen(s), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *out = malloc(cap);
    sodium_bin2base64(out, cap, (const unsigned char *)s, strlen(s),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return out;
}

Test(auth, a_signed_token_verifies_with_its_claims)
{
    auth_key k = key();
    auth_claims c = alice(), got;
    c.role = AUTH_OPERATOR;
    char *t = auth_sign(&k, &c, "shop");
    cr_assert_not_null(t);
    cr_assert_eq(auth_verify(&k, t, "shop", NOW + 10, &got), 0);
    cr_assert_str_eq(got.sub, "alice");
    cr_assert_eq(got.role, AUTH_OPERATOR);
    cr_assert_eq(got.exp, NOW + 900);
    cr_assert_str_eq(got.jti, c.jti);
    free(t);
}

Test(auth, another_key_expiry_and_audience_are_refused)
{
    auth_key k = key(), other = key();
    auth_claims c = alice(), got;
    char *t = auth_sign(&other, &c, "shop");
    cr_assert_eq(auth_verify(&k, t, "shop", NOW, &got), -AUTH_SIGNATURE);
    free(t);
    t = auth_sign(&k, &c, "shop");
    cr_assert_eq(auth_verify(&k, t, "shop", NOW + 900 + 6, &got), -AUTH_EXPIRED);
    cr_assert_eq(auth_verify(&k, t, "shop", NOW - 60, &got), -AUTH_EXPIRED, "issued in the future");
    cr_assert_eq(auth_verify(&k, t, "elsewhere", NOW, &got), -AUTH_AUDIENCE);
    cr_assert_str_eq(got.sub, "", "nothing filled in for a refused token");
    free(t);
}

Test(auth, alg_none_and_hmac_with_the_public_key_are_refused)
{
    auth_key k = key();
    auth_claims got;
    char claims[256];
    snprintf(claims, sizeof claims,
             "{\"iss\":\"shop-identity\",\"aud\":\"shop\",\"sub\":\"alice\",\"role\":\"operator\","
             "\"iat\":%lld,\"exp\":%lld}",
             (long long)NOW, (long long)NOW + 900);
    const char *headers[] = {"{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"alg\":\"HS256\"}",
                             "{\"alg\":\"EdDSA\",\"crit\":[\"x\"]}", "{\"typ\":\"JWT\"}"};
    char *p = b64(claims);
    for (size_t i = 0; i < sizeof headers / sizeof *headers; i++) {
        char *h = b64(headers[i]), token[1024];
        /* An HMAC-SHA256 keyed with the public key: the classic confusion. */
        unsigned char mac[crypto_auth_hmacsha256_BYTES];
        snprintf(token, sizeof token, "%s.%s", h, p);
        crypto_auth_hmacsha256_state st;
        crypto_auth_hmacsha256_init(&st, k.pk, sizeof k.pk);
        crypto_auth_hmacsha256_update(&st, (unsigned char *)token, strlen(token));
        crypto_auth_hmacsha256_final(&st, mac);
        char sig[128];
        sodium_bin2base64(sig, sizeof sig, mac, sizeof mac,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        strcat(token, ".");
        strcat(token, sig);
        cr_assert_eq(auth_verify(&k, token, "shop", NOW, &got), -AUTH_ALGORITHM, "%s", headers[i]);
        snprintf(token, sizeof token, "%s.%s.", h, p); /* and with no signature */
        cr_assert_eq(auth_verify(&k, token, "shop", NOW, &got), -AUTH_MALFORMED, "%s", headers[i]);
        free(h);
    }
    free(p);
}

Test(auth, mangled_tokens_are_refused)
{
    auth_key k = key();
    auth_claims c = alice(), got;
    char *t = auth_sign(&k, &c, "shop");
    size_t n = strlen(t);
    char buf[AUTH_TOKEN_MAX + 16];
    /* Truncated anywhere. */
    for (size_t cut = 0; cut < n; cut += 7) {
        snprintf(buf, sizeof buf, "%.*s", (int)cut, t);
        cr_assert_neq(auth_verify(&k, buf, "shop", NOW, &got), 0, "cut at %zu", cut);
    }
    /* The claims swapped for another user's, signature kept. */
    char *bob = b64("{\"iss\":\"shop-identity\",\"aud\":\"shop\",\"sub\":\"bob\",\"role\":\"user\","
                    "\"iat\":1795000000,\"exp\":1795000900}");
    const char *d1 = strchr(t, '.'), *d2 = strchr(d1 + 1, '.');
    snprintf(buf, sizeof buf, "%.*s.%s%s", (int)(d1 - t), t, bob, d2);
    cr_assert_eq(auth_verify(&k, buf, "shop", NOW, &got), -AUTH_SIGNATURE);
    free(bob);
    /* A fourth part, padding, spaces, a flipped signature byte. */
    snprintf(buf, sizeof buf, "%s.x", t);
    cr_assert_eq(auth_verify(&k, buf, "shop", NOW, &got), -AUTH_MALFORMED);
    snprintf(buf, sizeof buf, "%s=", t);
    cr_assert_neq(auth_verify(&k, buf, "shop", NOW, &got), 0);
    snprintf(buf, sizeof buf, " %s", t);
    cr_assert_neq(auth_verify(&k, buf, "shop", NOW, &got), 0);
    snprintf(buf, sizeof buf, "%s", t);
    buf[n - 2] = buf[n - 2] == 'A' ? 'B' : 'A';
    cr_assert_eq(auth_verify(&k, buf, "shop", NOW, &got), -AUTH_SIGNATURE);
    /* Too long to be read at all. */
    memset(buf, 'a', AUTH_TOKEN_MAX + 1);
    buf[AUTH_TOKEN_MAX + 1] = '\0';
    cr_assert_eq(auth_verify(&k, buf, "shop", NOW, &got), -AUTH_MALFORMED);
    cr_assert_eq(auth_verify(&k, "", "shop", NOW, &got), -AUTH_MALFORMED);
    cr_assert_eq(auth_verify(&k, NULL, "shop", NOW, &got), -AUTH_MALFORMED);
    free(t);
}

Test(auth, keys_survive_their_text_form)
{
    auth_key k = key(), sk, pk;
    char text[AUTH_KEY_B64_MAX];
    auth_key_secret_text(&k, text);
    cr_assert_eq(auth_key_from_secret_text(&sk, text), 0);
    cr_assert_eq(memcmp(sk.pk, k.pk, sizeof k.pk), 0, "the public key follows from the secret");
    auth_key_public_text(&k, text);
    cr_assert_eq(auth_key_from_public_text(&pk, text), 0);
    cr_assert_not(pk.has_sk);
    auth_claims c = alice(), got;
    char *t = auth_sign(&sk, &c, "shop");
    cr_assert_eq(auth_verify(&pk, t, "shop", NOW, &got), 0);
    cr_assert_null(auth_sign(&pk, &c, "shop"), "no signing without the secret key");
    free(t);
    cr_assert_eq(auth_key_from_public_text(&pk, "not base64!"), -EINVAL);
    cr_assert_eq(auth_key_from_public_text(&pk, "AAAA"), -EINVAL, "too short");
}

Test(auth, a_secret_key_whose_halves_disagree_is_refused)
{
    auth_key a = key(), b = key(), got;
    memcpy(a.sk + 32, b.pk, 32); /* a's seed, b's public key */
    char text[AUTH_KEY_B64_MAX];
    auth_key_secret_text(&a, text);
    cr_assert_eq(auth_key_from_secret_text(&got, text), -EINVAL);
    cr_assert_not(got.has_sk);
}

/* Found by fuzz_token: libsodium's decoder reads 0xDF as '_' and ignores
 * the unused bits of a part's last character, so one signed token had
 * other spellings that verified. Only the canonical one does now. */
Test(auth, a_token_has_one_spelling)
{
    auth_key k = key();
    auth_claims c = alice(), got;
    char *t = auth_sign(&k, &c, "shop");
    size_t n = strlen(t);
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char buf[AUTH_TOKEN_MAX];
    /* The last character with one of its unused low bits flipped. */
    snprintf(buf, sizeof buf, "%s", t);
    size_t i = (size_t)(strchr(alphabet, buf[n - 1]) - alphabet);
    buf[n - 1] = alphabet[i ^ 1];
    cr_assert_neq(auth_verify(&k, buf, "shop", NOW, &got), 0, "%s", buf);
    /* Any letter with its high bit set. */
    for (size_t at = 0; at < n; at++) {
        if (t[at] == '.')
            continue;
        snprintf(buf, sizeof buf, "%s", t);
        buf[at] = (char)((unsigned char)buf[at] | 0x80);
        cr_assert_neq(auth_verify(&k, buf, "shop", NOW, &got), 0, "byte %zu", at);
    }
    free(t);
}

Test(auth, the_cache_answers_only_for_the_very_token_and_only_until_it_expires)
{
    auth_key k = key();
    auth_cache *cache = auth_cache_new(64);
    cr_assert_not_null(cache);
    auth_claims c = alice(), got;
    char *t = auth_sign(&k, &c, "shop");
    uint64_t hits, misses;

    cr_assert_eq(auth_verify_cached(cache, &k, t, "shop", NOW, &got), 0);
    cr_assert_eq(auth_verify_cached(cache, &k, t, "shop", NOW + 1, &got), 0);
    cr_assert_str_eq(got.sub, "alice");
    cr_assert_eq(got.exp, NOW + 900);
    auth_cache_counts(cache, &hits, &misses);
    cr_assert_eq(hits, 1, "the second look-up is the cache's");
    cr_assert_eq(misses, 1);

    /* The same token with one character of its signature changed (not the
     * last, whose low bits are padding): not the cached one. */
    char *forged = strdup(t);
    char *c10 = &forged[strlen(forged) - 10];
    *c10 = *c10 == 'A' ? 'B' : 'A';
    cr_assert_neq(auth_verify_cached(cache, &k, forged, "shop", NOW, &got), 0);
    /* Another audience is checked anew, and refused. */
    cr_assert_eq(auth_verify_cached(cache, &k, t, "elsewhere", NOW, &got), -AUTH_AUDIENCE);
    /* Past exp (and the leeway), the cached token is refused as auth_verify would. */
    cr_assert_eq(auth_verify_cached(cache, &k, t, "shop", NOW + 900 + 4, &got), 0);
    cr_assert_eq(auth_verify_cached(cache, &k, t, "shop", NOW + 900 + 5, &got), -AUTH_EXPIRED);
    cr_assert_eq(auth_verify(&k, t, "shop", NOW + 900 + 5, &got), -AUTH_EXPIRED);
    /* Refused tokens are never kept: the forged one is refused again, by
     * its signature. */
    cr_assert_eq(auth_verify_cached(cache, &k, forged, "shop", NOW, &got), -AUTH_SIGNATURE);
    free(forged);
    free(t);
    auth_cache_free(cache);
    cr_assert_null(auth_cache_new(3), "slots must be a power of two");
}
