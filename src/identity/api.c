/* The identity HTTP API: sign up, sign in, sign out, who am I. */
#include "identity/app.h"
#include "identity/store.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/valid.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define PASSWORD_MIN 8 /* characters (code points), as the document counts */
#define PASSWORD_MAX 128

/* Argon2id, a few at a time (each takes memlimit bytes) and timed: hashes
 * `password` into `out`, or, `out` NULL, checks it against `hash`. 0 when
 * done (or matching); -ENOMEM (hashing), -EACCES (another password). */
static int argon2(identity_app *app, const char *password, const char *hash, char *out)
{
    int64_t t0 = clock_now_us();
    size_t n = strlen(password);
    sem_wait(&app->hashing);
    int rc = out ? crypto_pwhash_str(out, password, n, app->opslimit, app->memlimit)
                 : crypto_pwhash_str_verify(hash, password, n);
    sem_post(&app->hashing);
    atomic_fetch_add(&app->hashes, 1);
    atomic_fetch_add(&app->hash_us, (uint64_t)(clock_now_us() - t0));
    return rc == 0 ? 0 : out ? -ENOMEM : -EACCES;
}

int identity_hash(identity_app *app, const char *password, char *out)
{
    return argon2(app, password, NULL, out);
}

static bool verify(identity_app *app, const char *hash, const char *password)
{
    return argon2(app, password, hash, NULL) == 0;
}

/* {user_id, password}, both checked; false when `res` holds the 4xx. A
 * sign-up or sign-in is JSON and, from a browser, from the shop's own page:
 * a form on another site (text/plain, its own Origin) cannot sign the
 * victim in as the attacker (login CSRF). */
static bool credentials(http_req *req, http_res *res, const char **user_id, const char **password)
{
    identity_app *app = req->app;
    if (!caller_json_body(req, res) || !caller_origin_ok(req, res, &app->svc.callers, false))
        return false;
    if (http_body_unpack(req, res, "{s:s, s:s}", "user_id", user_id, "password", password) < 0)
        return false;
    if (!caller_user_id_ok(res, *user_id))
        return false;
    size_t bytes = strlen(*password), chars = 0;
    for (const char *s = *password; *s; s++)
        chars += ((unsigned char)*s & 0xC0) != 0x80; /* UTF-8 lead bytes */
    json_t *p = json_object_get(req->json, "password");
    if (chars < PASSWORD_MIN || chars > PASSWORD_MAX || bytes != json_string_length(p)) {
        http_error(res, 400, "invalid_password",
                   "password must be %d to %d characters, without NUL", PASSWORD_MIN, PASSWORD_MAX);
        return false;
    }
    return true;
}

static json_t *user_json(const user *u)
{
    return json_pack("{s:s, s:s, s:s}", "user_id", u->user_id, "role", auth_role_name(u->role),
                     "created_at", u->created_at);
}

char *identity_issue(identity_app *app, const char *user_id, auth_role role, int ttl_s,
                     auth_claims *claims)
{
    *claims = (auth_claims){.role = role};
    snprintf(claims->sub, sizeof claims->sub, "%s", user_id);
    claims->iat = clock_wall_s();
    claims->exp = claims->iat + ttl_s;
    unsigned char id[16];
    randombytes_buf(id, sizeof id);
    sodium_bin2hex(claims->jti, sizeof claims->jti, id, sizeof id);
    return auth_sign(&app->svc.callers.key, claims, app->svc.callers.audience);
}

static void iso_time(int64_t t, char *out, size_t len)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void sign_up(http_req *req, http_res *res)
{
    identity_app *app = req->app;
    const char *user_id, *password;
    if (!credentials(req, res, &user_id, &password))
        return;
    char hash[crypto_pwhash_STRBYTES];
    if (identity_hash(app, password, hash) < 0) {
        http_error(res, 503, "busy", "cannot hash the password now; retry");
        return;
    }
    db_conn *c = NULL;
    user u;
    int rc = db_acquire(app->svc.db, 1000, &c);
    if (rc == 0)
        rc = store_user_create(c, user_id, hash, AUTH_USER, &u);
    db_release(app->svc.db, c);
    sodium_memzero(hash, sizeof hash);
    if (rc == 0) {
        atomic_fetch_add(&app->sign_ups, 1);
        log_msg(LOG_INFO, req->req_id, "signed up %s", user_id);
        http_json(res, 201, user_json(&u));
    } else if (rc == -EEXIST) {
        http_error(res, 409, "user_exists", "user %s exists already", user_id);
    } else {
        answer_db_error(res, rc);
    }
}

static void set_cookie(identity_app *app, http_res *res, const char *token, int max_age)
{
    char cookie[1024];
    snprintf(cookie, sizeof cookie, "%s=%s; Path=/; Max-Age=%d; HttpOnly; SameSite=Strict%s",
             AUTH_COOKIE, token, max_age, app->cookie_secure ? "; Secure" : "");
    http_add_header(res, "Set-Cookie", cookie);
}

/* True when `addr` is one of the space-separated addresses of `list`. */
static bool addr_listed(const char *list, const char *addr)
{
    size_t n = strlen(addr);
    for (const char *p = list; n && (p = strstr(p, addr)); p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == '\0' || p[n] == ' '))
            return true;
    return false;
}

/* The address a sign-in comes from: the gateway's X-Real-IP when the
 * connection is from a trusted proxy (TRUSTED_PROXIES; the gateway sets
 * the header itself, whatever the client sent), else the peer's own. */
static void client_of(identity_app *app, http_req *req, char *out, size_t len)
{
    http_peer(req, out, len);
    const char *real = http_header(req, "X-Real-IP");
    unsigned char ip[sizeof(struct in6_addr)];
    if (!real || !addr_listed(app->trusted_proxies, out) ||
        (inet_pton(AF_INET, real, ip) != 1 && inet_pton(AF_INET6, real, ip) != 1))
        return;
    snprintf(out, len, "%s", real);
}

/* Wrong password and unknown user take the same steps (an attempt
 * counted, a read, one Argon2id verification) and get the same answer. The
 * attempt is counted before the password is checked and cleared on
 * success, so parallel guesses cannot pass the limit; the limit is per
 * user id and address, with growing waits, so nobody can lock the owner
 * out from elsewhere. */
static void sign_in(http_req *req, http_res *res)
{
    identity_app *app = req->app;
    const char *user_id, *password;
    if (!credentials(req, res, &user_id, &password))
        return;
    char client[INET6_ADDRSTRLEN];
    client_of(app, req, client, sizeof client);
    db_conn *c = NULL;
    user u;
    int wait_s = 0, rc = db_acquire(app->svc.db, 1000, &c);
    if (rc == 0)
        rc = store_attempt_take(c, user_id, client, app->max_failures, app->window_s, &wait_s);
    if (rc == 0) {
        db_release(app->svc.db, c);
        atomic_fetch_add(&app->sign_ins_limited, 1);
        char after[16];
        snprintf(after, sizeof after, "%d", wait_s);
        http_error(res, 429, "too_many_attempts",
                   "too many failed sign-ins for this user id from this address; retry in %d s",
                   wait_s);
        http_add_header(res, "Retry-After", after);
        return;
    }
    bool known = false;
    if (rc == 1) {
        rc = store_user_get(c, user_id, &u);
        known = rc == 0;
        if (rc == -ENOENT)
            rc = 0;
    }
    /* No connection held through the hash: it may wait for a slot. */
    db_release(app->svc.db, c), c = NULL;
    if (rc < 0) {
        answer_db_error(res, rc);
        return;
    }
    bool ok = verify(app, known ? u.password_hash : app->dummy_hash, password) && known;
    if (ok && (rc = db_acquire(app->svc.db, 1000, &c)) == 0)
        rc = store_attempts_clear(c, user_id, client);
    db_release(app->svc.db, c);
    if (ok && rc < 0) {
        answer_db_error(res, rc);
        return;
    }
    if (!ok) {
        atomic_fetch_add(&app->sign_ins_failed, 1);
        log_msg(LOG_INFO, req->req_id, "sign-in refused for %s from %s", user_id, client);
        http_error(res, 401, "invalid_credentials", "the user id or the password is wrong");
        return;
    }
    auth_claims claims;
    char *token = identity_issue(app, u.user_id, u.role, app->token_ttl_s, &claims);
    if (!token) {
        http_error(res, 500, "internal", "out of memory");
        return;
    }
    char expires[32];
    iso_time(claims.exp, expires, sizeof expires);
    atomic_fetch_add(&app->sign_ins_ok, 1);
    log_msg(LOG_INFO, req->req_id, "signed in %s (%s, token %s)", u.user_id, auth_role_name(u.role),
            claims.jti);
    set_cookie(app, res, token, app->token_ttl_s);
    http_json(res, 200,
              json_pack("{s:s, s:s, s:s, s:s, s:s}", "token", token, "token_type", "Bearer",
                        "expires_at", expires, "user_id", u.user_id, "role",
                        auth_role_name(u.role)));
    free(token);
}

static void sign_out(http_req *req, http_res *res)
{
    identity_app *app = req->app;
    set_cookie(app, res, "", 0);
    res->status = 204;
}

static void who_am_i(http_req *req, http_res *res)
{
    identity_app *app = req->app;
    caller who;
    if (caller_authenticate(req, res, &app->svc.callers, &who) < 0)
        return;
    const auth_claims claims = who.claims;
    char expires[32];
    iso_time(claims.exp, expires, sizeof expires);
    http_json(res, 200,
              json_pack("{s:s, s:s, s:s}", "user_id", claims.sub, "role",
                        auth_role_name(claims.role), "expires_at", expires));
}

const http_route identity_routes[] = {
    {"POST", "/users", sign_up, NULL},
    {"POST", "/sessions", sign_in, NULL},
    {"DELETE", "/sessions/current", sign_out, NULL},
    {"GET", "/me", who_am_i, NULL},
};
_Static_assert(sizeof identity_routes / sizeof *identity_routes == IDENTITY_NROUTES,
               "IDENTITY_NROUTES (app.h) must count the routes");

bool identity_ready(void *arg, json_t *checks)
{
    identity_app *app = arg;
    return svc_ready(app->svc.db, NULL, checks);
}

void identity_purge(void *arg)
{
    identity_app *app = arg;
    svc_purge(&app->svc, store_attempts_purge, app->window_s, "sign-in attempts",
              &app->purge_failures);
}

void identity_metrics(void *arg, FILE *out)
{
    identity_app *app = arg;
    metrics_series(out, "identity_sign_ups_total", "counter", "Users signed up",
                   atomic_load(&app->sign_ups));
    metrics_header(out, "identity_sign_ins_total", "counter",
                   "Sign-ins, by result (limited: refused with 429 before any check)");
    metrics_sample(out, "identity_sign_ins_total", "result=\"ok\"", atomic_load(&app->sign_ins_ok));
    metrics_sample(out, "identity_sign_ins_total", "result=\"failed\"",
                   atomic_load(&app->sign_ins_failed));
    metrics_sample(out, "identity_sign_ins_total", "result=\"limited\"",
                   atomic_load(&app->sign_ins_limited));
    metrics_header(out, "identity_password_hash_seconds", "summary",
                   "Argon2id hashes and verifications, waiting for a slot included");
    fprintf(out, "identity_password_hash_seconds_count %" PRIu64 "\n", atomic_load(&app->hashes));
    fprintf(out, "identity_password_hash_seconds_sum %.6f\n",
            (double)atomic_load(&app->hash_us) / 1e6);
    metrics_header(out, "worker_failures_total", "counter",
                   "Rounds of a background worker that failed (each is logged)");
    metrics_sample(out, "worker_failures_total", "worker=\"purge\"",
                   atomic_load(&app->purge_failures));
}
