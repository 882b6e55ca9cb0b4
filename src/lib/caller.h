/* Who calls, and what they may do: every handler of orders, payments and
 * identity starts here. Authentication: the token of `Authorization:
 * Bearer ...`, else of the session cookie, verified with identity's public
 * key (auth.h) for this shop's audience. Where a write may come from: a
 * JSON body only, and, when the cookie carried the identity, the shop's
 * own page as its Origin (no cross-site request forgery). Authorization:
 * a user acts for themself; an operator may read anyone's data, on the
 * record. Answers 400, 401, 403 or 415 itself when the request may not go
 * on. */
#ifndef SHOP_CALLER_H
#define SHOP_CALLER_H

#include "lib/auth.h"
#include "lib/config.h"
#include "lib/http.h"

#include <stdbool.h>

/* What a service checks its callers with: set up at start-up, then
 * read-only (the cache locks itself). */
typedef struct callers {
    auth_key key;         /* identity's public key (or identity's own pair) */
    auth_cache *tokens;   /* tokens verified lately (NULL: none) */
    const char *audience; /* TOKEN_AUDIENCE */
    char origins[512];    /* ALLOWED_ORIGINS, space-separated */
} callers;

/* What callers are checked with, as set. */
typedef struct caller_settings {
    const char *audience, *origins, *public_key, *public_key_file;
    int64_t cache_slots, key_wait_s;
} caller_settings;
extern const cfg_table caller_settings_table; /* audience, origins: every service */
/* identity's public key and the cache: the services that verify tokens */
extern const cfg_table caller_key_settings_table;

/* Who a request acts for: the token's user. */
typedef struct caller {
    auth_claims claims;
    bool via_cookie; /* the browser's cookie, not an Authorization header */
} caller;

/* Loads identity's public key into cs->key: AUTH_PUBLIC_KEY, else the
 * file AUTH_PUBLIC_KEY_FILE, waited for up to AUTH_KEY_WAIT_S (identity
 * may be starting next to us, and writes it on its first start). 0, or
 * -EINVAL (logged) when there is none or it is not a key. */
int callers_load_key(callers *cs, const char *file, const char *given, int wait_s);

/* The caller's identity, verified now. Returns 0 and fills `who`, or a
 * negative code (-AUTH_*) with a 401 in `res`. */
int caller_authenticate(http_req *req, http_res *res, const callers *cs, caller *who);

/* True when `origin` is one of the allowed origins. */
bool caller_origin_allowed(const callers *cs, const char *origin);

/* False, with 415 unsupported_media_type in `res`, when the request has a
 * body that is not application/json (a form another site posts is not). */
bool caller_json_body(http_req *req, http_res *res);

/* False, with 403 cross_origin in `res`, when the request names an Origin
 * that is not one of ALLOWED_ORIGINS, or names none and `required`. A
 * browser sends its page's Origin with every POST: another site's page
 * cannot act through it. */
bool caller_origin_ok(http_req *req, http_res *res, const callers *cs, bool required);

/* For a handler: fills `who` from the request's token, or answers 401 and
 * returns false. For a request that changes something (`write`), also:
 * the body must be application/json (else 415), and when the cookie
 * carried the identity, the Origin must be one of ALLOWED_ORIGINS (else
 * 403). */
bool caller_of(http_req *req, http_res *res, const callers *cs, bool write, caller *who);

/* False, with 400 invalid_user_id in `res`, when `user_id` is not a valid
 * user id (valid.h). */
bool caller_user_id_ok(http_res *res, const char *user_id);

/* True when `who` may act on `user_id`'s resources: a valid id (else 400)
 * of the same user, or of anyone for an operator when `operator_may`
 * (reads for support: logged with both). Else 403. */
bool caller_may_act_for(http_res *res, const caller *who, const char *user_id, bool operator_may);

#endif
