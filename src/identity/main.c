/* The identity service: users, Argon2id passwords, signed tokens. Settings:
 * see the README's configuration table. `identity operator NAME` makes NAME
 * an operator with a new random password, printed once (no default
 * password exists). */
#include "identity/app.h"
#include "identity/store.h"
#include "lib/config.h"
#include "lib/file.h"
#include "lib/log.h"
#include "lib/svc.h"
#include "lib/valid.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const cfg_setting identity_settings_list[] = {
    SVC_OWN_SETTINGS(identity_settings, "IDENTITY", 8082, "identity"),
    CFG_S("AUTH_PRIVATE_KEY_FILE", identity_settings, private_key_file, "var/identity-signing.key",
          "the Ed25519 signing key, made on the first start (0600)"),
    CFG_S("AUTH_PRIVATE_KEY", identity_settings, private_key, "",
          "the signing key itself (base64 of libsodium's 64-byte secret key), instead of the file"),
    CFG_S("AUTH_PUBLIC_KEY_FILE", identity_settings, public_key_file, "",
          "where identity writes the public half (unset: AUTH_PRIVATE_KEY_FILE + .pub)"),
    CFG_I("TOKEN_TTL_S", identity_settings, token_ttl_s, 30, 86400, 900, "how long a token lives"),
    CFG_I("SIGNIN_MAX_FAILURES", identity_settings, max_failures, 1, 1000, 5,
          "sign-in attempts per user id and address within SIGNIN_WINDOW_S before that address "
          "waits (1 s, 2 s, 4 s... up to the window; 429)"),
    CFG_I("SIGNIN_WINDOW_S", identity_settings, window_s, 1, 86400, 900,
          "the window sign-in attempts are counted in"),
    CFG_S("TRUSTED_PROXIES", identity_settings, trusted_proxies, "127.0.0.1 ::1",
          "the addresses whose X-Real-IP header names the client (the gateway's)"),
    CFG_I("PASSWORD_OPSLIMIT", identity_settings, opslimit, 1, 32, 2, "Argon2id's passes"),
    CFG_I("PASSWORD_MEMLIMIT_KIB", identity_settings, memlimit_kib, 8, 4 << 20, 19456,
          "Argon2id's memory (OWASP's minimum)"),
    CFG_I("PASSWORD_HASHES_AT_ONCE", identity_settings, hashes_at_once, 1, 256, 4,
          "how many Argon2id hashes run at once"),
    CFG_I("COOKIE_SECURE", identity_settings, cookie_secure, 0, 1, 0,
          "1 adds Secure to the session cookie (behind HTTPS)"),
};
static const cfg_table identity_settings_table = CFG_TABLE("identity", identity_settings_list);

/* Writes `text` to `path` with `mode`, atomically (a new file renamed). */
static int write_file(const char *path, const char *text, mode_t mode)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return -errno;
    size_t n = strlen(text);
    bool ok = write(fd, text, n) == (ssize_t)n && fchmod(fd, mode) == 0 && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -EIO;
    }
    return 0;
}

/* The signing key: AUTH_PRIVATE_KEY when set; else the file, made on the
 * first start (mode 0600). The public half goes next to it (.pub, 0644),
 * where orders and payments read it. */
static int load_key(identity_app *app)
{
    const char *given = app->settings.private_key;
    char text[AUTH_KEY_B64_MAX + 2];
    if (given[0]) {
        if (auth_key_from_secret_text(&app->svc.callers.key, given) < 0) {
            log_msg(LOG_ERROR, NULL, "AUTH_PRIVATE_KEY is not a base64 Ed25519 secret key");
            return -EINVAL;
        }
    } else {
        char *stored = file_read(app->key_file, NULL);
        if (stored) {
            int bad = auth_key_from_secret_text(&app->svc.callers.key, stored);
            sodium_memzero(stored, strlen(stored));
            free(stored);
            if (bad) {
                log_msg(LOG_ERROR, NULL, "%s does not hold an Ed25519 secret key", app->key_file);
                return -EINVAL;
            }
        } else {
            auth_key_generate(&app->svc.callers.key);
            auth_key_secret_text(&app->svc.callers.key, text);
            strcat(text, "\n");
            int rc = write_file(app->key_file, text, 0600);
            sodium_memzero(text, sizeof text);
            if (rc < 0) {
                log_msg(LOG_ERROR, NULL, "cannot write the signing key to %s: %s", app->key_file,
                        strerror(-rc));
                return -EINVAL;
            }
            log_msg(LOG_INFO, NULL, "made a new signing key in %s", app->key_file);
        }
    }
    char pub[4096];
    snprintf(pub, sizeof pub, "%s", app->settings.public_key_file);
    if (!pub[0])
        snprintf(pub, sizeof pub, "%s.pub", app->key_file);
    auth_key_public_text(&app->svc.callers.key, text);
    strcat(text, "\n");
    if (write_file(pub, text, 0644) < 0) {
        log_msg(LOG_ERROR, NULL, "cannot write the public key to %s", pub);
        return -EINVAL;
    }
    return 0;
}

static int configure(void *arg)
{
    identity_app *app = arg;
    const identity_settings *s = &app->settings;
    app->token_ttl_s = (int)s->token_ttl_s;
    app->max_failures = (int)s->max_failures;
    app->window_s = (int)s->window_s;
    /* Whose X-Real-IP header names the client (the gateway's address). */
    snprintf(app->trusted_proxies, sizeof app->trusted_proxies, "%s", s->trusted_proxies);
    app->opslimit = (unsigned long long)s->opslimit;
    app->memlimit = (size_t)s->memlimit_kib * 1024;
    app->cookie_secure = s->cookie_secure != 0;
    app->key_file = s->private_key_file;
    if (auth_init() < 0 || sem_init(&app->hashing, 0, (unsigned)s->hashes_at_once) != 0)
        return -EINVAL;
    return 0;
}

/* The settings, for the commands that run without svc_run: its own table,
 * and the audience tokens are signed for. */
static int configure_alone(identity_app *app)
{
    caller_settings cs;
    if (cfg_load(&identity_settings_table, &app->settings) < 0 ||
        cfg_load(&caller_settings_table, &cs) < 0)
        return -EINVAL;
    app->svc.callers.audience = cs.audience;
    return configure(app);
}

static int start(void *arg, const char *db_url)
{
    (void)db_url;
    identity_app *app = arg;
    if (load_key(app) < 0)
        return -EINVAL;
    /* An unknown user's sign-in verifies against this, as long as a real one. */
    return identity_hash(app, "not a password of anyone", app->dummy_hash);
}

/* `identity operator NAME`: sets NAME up as an operator with a password
 * made here and printed once. */
static int make_operator(identity_app *app, const char *user_id)
{
    if (!valid_user_id(user_id)) {
        fprintf(stderr, "not a user id: %s\n", user_id);
        return 2;
    }
    if (configure_alone(app) < 0)
        return 2;
    sigset_t none;
    sigemptyset(&none);
    const char *db_url = app->settings.own.db_url;
    if (svc_migrate(identity_settings_list[1].name, db_url, NULL, app->settings.own.migrations,
                    &none) < 0)
        return 1;
    unsigned char raw[18];
    char password[32], hash[crypto_pwhash_STRBYTES];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(password, sizeof password, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    static const db_stmt *const sets[] = {identity_stmts, NULL};
    db_pool *pool = db_pool_new(db_url, 1, sets);
    db_conn *c = NULL;
    int rc = pool && identity_hash(app, password, hash) == 0 ? db_acquire(pool, 5000, &c) : -ENOMEM;
    if (rc == 0)
        rc = store_operator_set(c, user_id, hash);
    db_release(pool, c);
    db_pool_free(pool);
    if (rc < 0) {
        fprintf(stderr, "could not set %s up as an operator\n", user_id);
        return 1;
    }
    log_msg(LOG_INFO, NULL, "%s is an operator now (a new password was made)", user_id);
    printf("operator %s, password (shown once): %s\n", user_id, password);
    return 0;
}

/* `identity operator-token NAME`: prints an operator token for NAME, valid
 * for five minutes, for an operator's tools on this machine (make
 * reconcile). It signs with the service's key, which whoever can read it
 * can sign anything with: it makes no key, and asks nothing of the
 * database. */
static int operator_token(identity_app *app, const char *user_id)
{
    if (!valid_user_id(user_id)) {
        fprintf(stderr, "not a user id: %s\n", user_id);
        return 2;
    }
    if (configure_alone(app) < 0)
        return 2;
    if (!app->settings.private_key[0] && access(app->key_file, R_OK) != 0) {
        fprintf(stderr, "no signing key at %s: has identity run here?\n", app->key_file);
        return 1;
    }
    auth_claims claims;
    char *token =
        load_key(app) == 0 ? identity_issue(app, user_id, AUTH_OPERATOR, 300, &claims) : NULL;
    if (!token)
        return 1;
    log_msg(LOG_INFO, NULL, "issued an operator token for %s (token %s, 300 s)", user_id,
            claims.jti);
    printf("%s\n", token);
    free(token);
    return 0;
}

int main(int argc, char **argv)
{
    static identity_app app;
    static const db_stmt *const stmts[] = {identity_stmts, NULL};
    static const svc_def def = {
        .name = "identity",
        .docs_title = "Shop identity API",
        .settings = &identity_settings_table,
        .values = offsetof(identity_app, settings),
        .stmt_sets = stmts,
        .routes = identity_routes,
        .nroutes = IDENTITY_NROUTES,
        .hooks = {.ready = identity_ready, .metrics = identity_metrics},
        .purge = identity_purge,
        .parts = offsetof(identity_app, svc),
        .configure = configure,
        .start = start,
    };
    if (argc == 3 && strcmp(argv[1], "operator") == 0) {
        log_init("identity", log_level_parse(cfg_str("LOG_LEVEL", "info")));
        return make_operator(&app, argv[2]);
    }
    if (argc == 3 && strcmp(argv[1], "operator-token") == 0) {
        log_init("identity", log_level_parse(cfg_str("LOG_LEVEL", "warn")));
        return operator_token(&app, argv[2]);
    }
    int help = svc_help(&def, argc, argv,
                        "identity [--help | --settings-tsv | operator USER_ID | "
                        "operator-token USER_ID]");
    if (help >= 0)
        return help;
    return svc_run(&def, &app);
}
