/* libFuzzer: one HTTP request of any bytes to a service's real HTTP stack
 * (libmicrohttpd, our router, query and header access, JSON bodies,
 * validation, Idempotency-Keys, the WebSocket upgrade) over a loopback
 * socket, as an outsider would send it. The database is a port where
 * nothing listens: whatever passes validation gets 503. Nothing may
 * answer 500, or trip a sanitizer. A fuzz target defines fuzz_routes,
 * fuzz_nroutes and fuzz_app, then includes this. */
#include "lib/auth.h"
#include "lib/http.h"
#include "lib/svc.h"

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
void *fuzz_app_start(void);

/* The key the seeds' tokens are signed with (seed 1, 2, ... 32: as
 * fuzz_token's): requests get past authentication to what follows it. */
static inline void fuzz_key(svc_parts *parts)
{
    unsigned char seed[32];
    for (int i = 0; i < 32; i++)
        seed[i] = (unsigned char)(i + 1);
    auth_init();
    auth_key_from_seed(&parts->key, seed);
    parts->audience = "shop";
    snprintf(parts->origins, sizeof parts->origins, "http://127.0.0.1:8000");
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
    int wait_ms = 30;
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
    /* Reset, not FIN: the server drops the connection at once. */
    struct linger hard = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
    close(fd);
    /* Every answer in the stream (pipelined requests too), read in turn:
     * status line, headers, Content-Length bytes of body. Only status
     * lines count: a body may echo the request's own bytes ("no route for
     * METHOD PATH"), and a path may hold "HTTP/1.1 5..." itself. */
    for (const char *s = answer; strncmp(s, "HTTP/1.", 7) == 0 && s[8] == ' ';) {
        if (s[9] == '5' && strncmp(s + 9, "503", 3) != 0 && strncmp(s + 9, "505", 3) != 0)
            __builtin_trap();
        const char *end = strstr(s, "\r\n\r\n");
        const char *cl = strcasestr(s, "\r\nContent-Length:");
        if (!end)
            break;
        size_t body = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
        if (body > got - (size_t)(end + 4 - answer))
            break;
        s = end + 4 + body;
    }
    return 0;
}
