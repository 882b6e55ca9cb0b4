/* libFuzzer: WebSocket frames from a client, through libwslay and the
 * hub's own callbacks and limits (ws.c is included: its connection code is
 * static). The bytes arrive as they would after the handshake; whatever
 * they are, the connection must end or wait for more without a sanitizer
 * report (a frame declaring more than the limit is closed with 1009). */
#include "../../src/lib/ws.c"

#include <fcntl.h>
#include <sys/socket.h>

static ws_hub hub;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    hub.epfd = epoll_create1(EPOLL_CLOEXEC);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return 0;
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    ws_conn *c = calloc(1, sizeof *c);
    wslay_event_context_server_init(&c->ctx, &callbacks, c);
    wslay_event_config_set_max_recv_msg_length(c->ctx, WS_MAX_RECV_MSG);
    c->fd = sv[0];
    c->extra = malloc(size ? size : 1);
    memcpy(c->extra, data, size);
    c->extra_len = size;
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(hub.epfd, EPOLL_CTL_ADD, c->fd, &e);
    c->events = EPOLLIN;

    bool open = true;
    char sink[4096];
    for (int round = 0; open && round < 64 && c->extra_off < c->extra_len; round++) {
        open = conn_io(&hub, c, EPOLLIN);
        while (read(sv[1], sink, sizeof sink) > 0) /* what the hub answered */
            ;
    }
    epoll_ctl(hub.epfd, EPOLL_CTL_DEL, c->fd, NULL);
    wslay_event_context_free(c->ctx);
    free(c->extra);
    free(c);
    close(sv[0]);
    close(sv[1]);
    return 0;
}
