/* libFuzzer: one HTTP request of any bytes to a service's real HTTP stack
 * (libmicrohttpd, our router, query and header access, JSON bodies,
 * validation, Idempotency-Keys, the WebSocket upgrade) over a loopback
 * socket, as an outsider would send it. Nothing may trip a sanitizer.
 *
 * Two modes. By default the database is a port where nothing listens:
 * whatever passes validation gets 503, and anything else of 5xx is a
 * finding. With FUZZ_<SERVICE>_DATABASE_URL set (scripts/fuzz.sh with
 * FUZZ_DB=1 starts a PostgreSQL for it), the target migrates and uses that
 * real database: every request goes all the way, so any 5xx at all is a
 * finding, and each request answered 2xx is written to FUZZ_ACCEPTED
 * (method, path, body in hex), where tests/fuzz/accepted.mjs checks its body
 * against the OpenAPI document: a 2xx for a body the document refuses is a
 * finding too.
 *
 * A fuzz target defines fuzz_routes, fuzz_nroutes and fuzz_app_start (with
 * fuzz_pool for its database), then includes this. */
#include "lib/auth.h"
#include "lib/consumer.h"
#include "lib/db.h"
#include "lib/deadletters.h"
#include "lib/http.h"
#include "lib/idem.h"
#include "lib/outbox.h"
#include "lib/svc.h"

#include <stdio.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fuzz_port;
static bool fuzz_real_db;
static FILE *fuzz_accepted;
static int fuzz_accepted_lines;
void *fuzz_app_start(void);

/* The service's pool: the real database named by `env` (migrated from
 * db/lib and `migrations` first, as svc_run does), or a port where nothing listens. The statements
 * are those svc_run prepares for a service with messages. */
static inline db_pool *fuzz_pool(const char *env, const char *dead_url, const char *migrations,
                                 const db_stmt *own)
{
    static const db_stmt *sets[6];
    sets[0] = own, sets[1] = idem_stmts, sets[2] = outbox_stmts, sets[3] = consumer_stmts;
    sets[4] = deadletter_stmts, sets[5] = NULL;
    const char *url = getenv(env);
    if (url && *url) {
        fuzz_real_db = true;
        db_pool *once = db_pool_new(url, 1, NULL);
        if (!once || db_migrate(once, "db/lib", "lib") != 0 ||
            db_migrate(once, migrations, NULL) != 0) {
            fprintf(stderr, "fuzz: cannot migrate %s at %s\n", migrations, url);
            abort();
        }
        db_pool_free(once);
        const char *path = getenv("FUZZ_ACCEPTED");
        if (path && *path)
            fuzz_accepted = fopen(path, "a");
    }
    return db_pool_new(fuzz_real_db ? url : dead_url, 4, sets);
}

/* What the input says as a request: its first line's method and target,
 * and its body (after the first empty line, CRLF or bare LF, up to its
 * Content-Length). `complete`: one whole request, not chunked, whose body
 * is all there, which the server will answer without waiting for more. */
typedef struct fuzz_request {
    const char *method, *target, *body;
    int method_len, target_len;
    size_t body_len;
    bool complete;
} fuzz_request;

static fuzz_request fuzz_parse(const uint8_t *data, size_t size)
{
    fuzz_request r = {0};
    const char *req = (const char *)data, *eol = memchr(req, '\n', size);
    const char *sp1 = eol ? memchr(req, ' ', (size_t)(eol - req)) : NULL;
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp2)
        return r;
    r.method = req, r.method_len = (int)(sp1 - req);
    r.target = sp1 + 1, r.target_len = (int)(sp2 - sp1 - 1);
    for (const char *p = eol; p && p + 1 < req + size;
         p = memchr(p + 1, '\n', size - (size_t)(p + 1 - req))) {
        if (p[1] == '\n' || (p + 2 < req + size && p[1] == '\r' && p[2] == '\n')) {
            r.body = p[1] == '\n' ? p + 2 : p + 3;
            break;
        }
    }
    if (!r.body)
        return r;
    size_t head = (size_t)(r.body - req);
    char *headers = strndup(req, head);
    if (!headers)
        return r;
    const char *cl = strcasestr(headers, "\ncontent-length:");
    size_t declared = cl ? strtoul(cl + 16, NULL, 10) : 0;
    r.body_len = size - head < declared ? size - head : declared;
    r.complete = !strcasestr(headers, "transfer-encoding") && size - head >= declared;
    free(headers);
    return r;
}

/* Writes one request answered 2xx: "METHOD<TAB>TARGET<TAB>BODY-IN-HEX", for
 * a complete request; at most 20,000 of them a run. */
static void fuzz_note_accepted(const fuzz_request *r)
{
    if (!fuzz_accepted || fuzz_accepted_lines >= 20000 || !r->complete)
        return;
    fprintf(fuzz_accepted, "%.*s\t%.*s\t", r->method_len, r->method, r->target_len, r->target);
    for (size_t i = 0; i < r->body_len; i++)
        fprintf(fuzz_accepted, "%02x", (unsigned char)r->body[i]);
    fputc('\n', fuzz_accepted);
    fflush(fuzz_accepted);
    fuzz_accepted_lines++;
}

/* The key the seeds' tokens are signed with (seed 1, 2, ... 32: as
 * fuzz_token's): requests get past authentication to what follows it. */
static inline void fuzz_key(svc_parts *parts)
{
    unsigned char seed[32];
    for (int i = 0; i < 32; i++)
        seed[i] = (unsigned char)(i + 1);
    auth_init();
    auth_key_from_seed(&parts->callers.key, seed);
    parts->callers.audience = "shop";
    snprintf(parts->callers.origins, sizeof parts->callers.origins, "http://127.0.0.1:8000");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    signal(SIGPIPE, SIG_IGN);
    void *app = fuzz_app_start();
    static const http_hooks hooks = {0};
    for (int port = 39000 + getpid() % 2000;; port++) {
        http_config cfg = {
            .host = "127.0.0.1", .port = port, .threads = 4, .max_body = 16384, .timeout_s = 2};
        if (http_start(&cfg, fuzz_routes, fuzz_nroutes, &hooks, app)) {
            fuzz_port = port;
            return 0;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)fuzz_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return 0;
    }
    for (size_t off = 0; off < size;) {
        ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    shutdown(fd, SHUT_WR); /* the request ends here, complete or not */
    /* Reads until one whole answer is in (headers and Content-Length
     * bytes; a 101 has none) and nothing more comes within 2 ms. A request
     * the server still waits on (a body shorter than its Content-Length:
     * libmicrohttpd waits for the rest until its timeout, EOF or not) gets
     * 30 ms to produce something: a complete one is answered in well
     * under that. */
    char answer[8192];
    size_t got = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    /* Against a real database a whole request is answered after its
     * transaction (the first one connects too): it gets 2 s. */
    fuzz_request parsed = fuzz_parse(data, size);
    int wait_ms = fuzz_real_db && parsed.complete ? 2000 : 30;
    while (got < sizeof answer - 1 && poll(&p, 1, wait_ms) > 0) {
        ssize_t n = recv(fd, answer + got, sizeof answer - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
        answer[got] = '\0';
        const char *end = strstr(answer, "\r\n\r\n");
        const char *cl = strcasestr(answer, "\r\nContent-Length:");
        if (end &&
            (!cl || cl > end || got >= (size_t)(end + 4 - answer) + strtoul(cl + 17, NULL, 10)))
            wait_ms = 2;
        else
            wait_ms = 1000; /* an answer has begun: wait for all of it */
    }
    answer[got] = '\0';
    if (getenv("FUZZ_DEBUG")) /* what a reproduction answered */
        fprintf(stderr, "fuzz answer (%zu bytes):\n%s\n", got, answer);
    /* Reset, not FIN: the server drops the connection at once. */
    struct linger hard = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
    close(fd);
    /* Every answer in the stream (pipelined requests too), read in turn:
     * status line, headers, Content-Length bytes of body. Only status
     * lines count: a body may echo the request's own bytes ("no route for
     * METHOD PATH"), and a path may hold "HTTP/1.1 5..." itself. */
    int answers = 0;
    bool accepted = false;
    for (const char *s = answer; strncmp(s, "HTTP/1.", 7) == 0 && s[8] == ' ';) {
        /* 505: the request's HTTP version refused, an answer about the
         * protocol; 503: the dead database, unless it is a real one. */
        if (s[9] == '5' && strncmp(s + 9, "505", 3) != 0 &&
            (fuzz_real_db || strncmp(s + 9, "503", 3) != 0))
            __builtin_trap();
        answers++;
        accepted = s[9] == '2';
        const char *end = strstr(s, "\r\n\r\n");
        const char *cl = strcasestr(s, "\r\nContent-Length:");
        if (!end)
            break;
        size_t body = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
        if (body > got - (size_t)(end + 4 - answer))
            break;
        s = end + 4 + body;
    }
    if (answers == 1 && accepted)
        fuzz_note_accepted(&parsed);
    return 0;
}
