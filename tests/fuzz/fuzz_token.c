/* libFuzzer: the token parser (auth_verify) on any bytes. Whatever they
 * are, a token not signed by our key is refused (one that verifies would be
 * a forgery: a finding), and a refusal names its reason. Seeds: a real
 * token and its mangled forms. */
#include "lib/auth.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static auth_key key;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    auth_init();
    /* A fixed key (seed 1, 2, ... 32), so that seeds signed with it keep
     * their meaning. */
    unsigned char seed[32];
    for (int i = 0; i < 32; i++)
        seed[i] = (unsigned char)(i + 1);
    auth_key_from_seed(&key, seed);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *token = malloc(size + 1);
    if (!token)
        return 0;
    memcpy(token, data, size);
    token[size] = '\0';
    auth_claims c;
    int rc = auth_verify(&key, token, "shop", 1795000000, &c);
    if (rc == 0) {
        /* Only a token our key signed can pass: re-signing what it says
         * must give the same bytes (Ed25519 is deterministic). */
        char *again = auth_sign(&key, &c, "shop");
        if (!again || strcmp(again, token) != 0)
            __builtin_trap();
        free(again);
    } else if (!err_str(rc)[0]) {
        __builtin_trap();
    }
    free(token);
    return 0;
}
