/* What the identity service's handlers share: borrowed by every request,
 * created by main. */
#ifndef IDENTITY_APP_H
#define IDENTITY_APP_H

#include "lib/auth.h"
#include "lib/http.h"
#include "lib/svc.h"

#include <semaphore.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdint.h>

/* The identity service's own settings (identity_settings_table). */
typedef struct identity_settings {
    svc_own own;
    const char *private_key, *private_key_file, *public_key_file, *trusted_proxies;
    int64_t token_ttl_s, max_failures, window_s, opslimit, memlimit_kib, hashes_at_once,
        cookie_secure;
} identity_settings;

typedef struct identity_app {
    identity_settings settings;
    svc_parts svc; /* the pool; identity has no messages */
    /* svc.callers.key is the signing key: its secret half lives only here */
    const char *key_file; /* where the key is kept, when not given as a setting */
    int token_ttl_s;
    int max_failures, window_s;  /* sign-in attempts per user id and address */
    char trusted_proxies[256];   /* TRUSTED_PROXIES: whose X-Real-IP is believed */
    unsigned long long opslimit; /* Argon2id's passes */
    size_t memlimit;             /* and memory, bytes */
    bool cookie_secure;
    sem_t hashing;                           /* Argon2id takes memlimit bytes: a few at a time */
    char dummy_hash[crypto_pwhash_STRBYTES]; /* verified for unknown users */
    _Atomic uint64_t sign_ups, sign_ins_ok, sign_ins_failed, sign_ins_limited;
    _Atomic uint64_t hashes, hash_us; /* count and total time of Argon2id */
    _Atomic uint64_t purge_failures;  /* logged, never swallowed */
} identity_app;

#define IDENTITY_NROUTES 4
extern const http_route identity_routes[]; /* IDENTITY_NROUTES of them */

bool identity_ready(void *app, json_t *checks);
void identity_metrics(void *app, FILE *out);
void identity_purge(void *app);

/* Argon2id of `password` with the app's parameters into `out`
 * (crypto_pwhash_STRBYTES); 0 or -ENOMEM without memory. */
int identity_hash(identity_app *app, const char *password, char *out);

/* A token for `user_id` with `role`, valid `ttl_s` seconds from now,
 * signed with the service's key; its claims in `claims`. Caller frees;
 * NULL without memory. */
char *identity_issue(identity_app *app, const char *user_id, auth_role role, int ttl_s,
                     auth_claims *claims);

#endif
