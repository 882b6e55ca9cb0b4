/* What verifying a token costs a service per request: auth_verify (base64url
 * of three parts, two JSON parses, one Ed25519 verification) on a real
 * token, N times on one core, then the same token through the cache the
 * services keep (auth_verify_cached: one BLAKE2b hash and a look-up).
 * Prints both means in microseconds. Part of `make bench` (results.json:
 * token_verify_us, token_cached_us). */
#include "lib/auth.h"
#include "lib/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 20000;
    if (n < 1 || auth_init() < 0)
        return 2;
    auth_key k;
    auth_key_generate(&k);
    auth_claims c = {.role = AUTH_USER, .iat = clock_wall_s(), .exp = clock_wall_s() + 900};
    strcpy(c.sub, "bench-user-0");
    strcpy(c.jti, "0123456789abcdef0123456789abcdef");
    char *token = auth_sign(&k, &c, "shop");
    auth_claims out;
    int64_t t0 = clock_now_us();
    for (int i = 0; i < n; i++)
        if (auth_verify(&k, token, "shop", c.iat, &out) != 0)
            return 1;
    double us = (double)(clock_now_us() - t0) / n;
    auth_cache *cache = auth_cache_new(4096);
    if (!cache)
        return 2;
    t0 = clock_now_us();
    for (int i = 0; i < n; i++)
        if (auth_verify_cached(cache, &k, token, "shop", c.iat, &out) != 0)
            return 1;
    double cached_us = (double)(clock_now_us() - t0) / n;
    printf("%.2f %.2f\n", us, cached_us);
    auth_cache_free(cache);
    free(token);
    return 0;
}
