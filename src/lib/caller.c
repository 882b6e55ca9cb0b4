#include "lib/caller.h"
#include "lib/clock.h"
#include "lib/file.h"
#include "lib/log.h"
#include "lib/valid.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* The value of cookie `name` in a Cookie header ("a=1; name=v; b=2"),
 * copied into `out`; false when absent or too long. */
static bool cookie_value(const char *header, const char *name, char *out, size_t len)
{
    size_t n = strlen(name);
    for (const char *p = header; p && *p;) {
        p += strspn(p, " \t");
        const char *end = strchr(p, ';');
        size_t item = end ? (size_t)(end - p) : strlen(p);
        if (item > n && strncmp(p, name, n) == 0 && p[n] == '=') {
            size_t vlen = item - n - 1;
            if (vlen == 0 || vlen >= len)
                return false;
            memcpy(out, p + n + 1, vlen);
            out[vlen] = '\0';
            return true;
        }
        p = end ? end + 1 : NULL;
    }
    return false;
}

int caller_authenticate(http_req *req, http_res *res, const callers *cs, caller *who)
{
    const char *authz = http_header(req, "Authorization");
    const char *cookies = http_header(req, "Cookie");
    char cookie[AUTH_TOKEN_MAX + 1];
    const char *token = NULL;
    who->via_cookie = false;
    if (authz && strncasecmp(authz, "Bearer ", 7) == 0)
        token = authz + 7;
    else if (cookies && cookie_value(cookies, AUTH_COOKIE, cookie, sizeof cookie))
        token = cookie, who->via_cookie = true;
    int rc = token ? auth_verify_cached(cs->tokens, &cs->key, token, cs->audience, clock_wall_s(),
                                        &who->claims)
                   : -AUTH_MISSING;
    if (rc == 0)
        return 0;
    if (!token && !authz)
        http_error(res, 401, "unauthenticated",
                   "sign in: this needs a Bearer token or the session cookie");
    else if (rc == -AUTH_EXPIRED)
        http_error(res, 401, "token_expired", "the session has expired: sign in again");
    else
        http_error(res, 401, "invalid_token", "the token was refused: %s",
                   err_str(rc == -AUTH_MISSING ? -AUTH_MALFORMED : rc));
    http_add_header(res, "WWW-Authenticate", "Bearer");
    return rc;
}

bool caller_origin_allowed(const callers *cs, const char *origin)
{
    size_t n = strlen(origin);
    for (const char *p = cs->origins; *p;) {
        p += strspn(p, " ");
        size_t len = strcspn(p, " ");
        if (len && len == n && strncmp(p, origin, n) == 0)
            return true;
        p += len;
    }
    return false;
}

bool caller_json_body(http_req *req, http_res *res)
{
    const char *type = http_header(req, "Content-Type");
    if (req->body_len && (!type || strncasecmp(type, "application/json", 16) != 0 ||
                          (type[16] != '\0' && type[16] != ';' && type[16] != ' '))) {
        http_error(res, 415, "unsupported_media_type", "the body must be application/json");
        return false;
    }
    return true;
}

bool caller_origin_ok(http_req *req, http_res *res, const callers *cs, bool required)
{
    const char *origin = http_header(req, "Origin");
    if ((origin || required) && (!origin || !caller_origin_allowed(cs, origin))) {
        http_error(res, 403, "cross_origin", "this request must come from the shop's own page");
        return false;
    }
    return true;
}

bool caller_of(http_req *req, http_res *res, const callers *cs, bool write, caller *who)
{
    if (caller_authenticate(req, res, cs, who) < 0)
        return false;
    if (!write)
        return true;
    /* A write carried by the cookie must name the shop's page as its
     * Origin (a browser always sends one with a POST). */
    return caller_json_body(req, res) && (!who->via_cookie || caller_origin_ok(req, res, cs, true));
}

bool caller_user_id_ok(http_res *res, const char *user_id)
{
    if (valid_user_id(user_id))
        return true;
    http_error(res, 400, "invalid_user_id", "user_id must be 1-64 characters of [A-Za-z0-9_.-]");
    return false;
}

bool caller_may_act_for(http_res *res, const caller *who, const char *user_id, bool operator_may)
{
    if (!caller_user_id_ok(res, user_id))
        return false;
    if (strcmp(who->claims.sub, user_id) == 0)
        return true;
    if (operator_may && who->claims.role == AUTH_OPERATOR) {
        /* Support reading a user's data: on the record, with who. */
        log_msg(LOG_INFO, NULL, "operator %s reads %s's data", who->claims.sub, user_id);
        return true;
    }
    http_error(res, 403, "forbidden", "this is not your account");
    return false;
}

int callers_load_key(callers *cs, const char *file, const char *given, int wait_s)
{
    if (auth_init() < 0)
        return -EINVAL;
    if (given[0]) {
        if (auth_key_from_public_text(&cs->key, given) == 0)
            return 0;
        log_msg(LOG_ERROR, NULL, "AUTH_PUBLIC_KEY is not a base64 Ed25519 public key");
        return -EINVAL;
    }
    for (int64_t waited = 0;; waited += 100) {
        char *text = file_read(file, NULL);
        if (text) {
            int rc = auth_key_from_public_text(&cs->key, text);
            free(text);
            if (rc == 0)
                return 0;
            log_msg(LOG_ERROR, NULL, "%s does not hold an Ed25519 public key", file);
            return -EINVAL;
        }
        if (waited >= (int64_t)wait_s * 1000) {
            log_msg(LOG_ERROR, NULL, "no public key in %s: is identity running?", file);
            return -EINVAL;
        }
        struct timespec pause = {.tv_nsec = 100 * 1000000};
        nanosleep(&pause, NULL);
    }
}

static const cfg_setting caller_settings_list[] = {
    CFG_S("TOKEN_AUDIENCE", caller_settings, audience, "shop",
          "the audience tokens are signed for (identity) and must name (orders, payments)"),
    CFG_S("ALLOWED_ORIGINS", caller_settings, origins,
          "http://localhost:8000 http://127.0.0.1:8000",
          "the shop's own pages (space-separated): the only Origin a cookie-borne write, a "
          "sign-in or a WebSocket may come from"),
};
const cfg_table caller_settings_table = CFG_TABLE("caller", caller_settings_list);

static const cfg_setting caller_key_settings_list[] = {
    CFG_S("AUTH_PUBLIC_KEY", caller_settings, public_key, "",
          "identity's public key itself (base64), instead of the file"),
    CFG_S("AUTH_PUBLIC_KEY_FILE", caller_settings, public_key_file, "var/identity-signing.key.pub",
          "the file identity writes its public key to, read at start-up"),
    CFG_I("AUTH_KEY_WAIT_S", caller_settings, key_wait_s, 0, 3600, 30,
          "how long to wait for that file at start-up (identity may be "
          "starting beside them)"),
    CFG_I("TOKEN_CACHE_SLOTS", caller_settings, cache_slots, 0, 1 << 20, 4096,
          "tokens remembered after their signature verified (a power of two; "
          "0: check every request's signature)"),
};
const cfg_table caller_key_settings_table = CFG_TABLE("caller", caller_key_settings_list);
