/* The dev broker: one process hosting librdkafka's mock cluster on
 * 127.0.0.1, so that the embedded stack speaks the real Kafka protocol over
 * TCP without a JVM. It creates the topics, writes its bootstrap address to
 * DEVBROKER_ADDR_FILE, and runs until SIGTERM or SIGINT.
 *
 * Settings: DEVBROKER_PORT (0: any free port), DEVBROKER_ADDR_FILE,
 * DEVBROKER_TOPICS (comma-separated), DEVBROKER_PARTITIONS. */
#include "lib/config.h"
#include "lib/log.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <pthread.h>
#include <unistd.h>

/* The port the listener should take; 0 leaves the kernel's choice. Written
 * once in main before the mock cluster starts. */
static uint16_t wanted_port;

/* librdkafka 2.0.2's mock broker always listens on 127.0.0.1 port 0, so a
 * restarted dev broker would come back on another port and every client
 * would lose it. No API sets the port in this version, so the dev broker
 * interposes bind(): the mock cluster's call resolves to this definition
 * (the executable comes first in symbol lookup), which puts the wanted port
 * in the address and sets SO_REUSEADDR, so that clients reconnect to the
 * same address after a restart. Every other bind passes through unchanged. */
int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    static int (*real_bind)(int, const struct sockaddr *, socklen_t);
    if (!real_bind)
        real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    if (wanted_port && addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in in;
        memcpy(&in, addr, sizeof in);
        if (in.sin_port == 0 && in.sin_addr.s_addr == htonl(INADDR_LOOPBACK)) {
            in.sin_port = htons(wanted_port);
            int one = 1;
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            wanted_port = 0; /* one broker, one port */
            return real_bind(fd, (const struct sockaddr *)&in, sizeof in);
        }
    }
    return real_bind(fd, addr, len);
}

/* The mock broker writes its responses on sockets with Nagle's algorithm
 * on: a second small response then waits for the client's delayed ACK,
 * about 40 ms, and every produce or fetch of a busy stack pays it. The dev
 * broker sets TCP_NODELAY on each connection it accepts, as a real Kafka
 * broker does. */
static void no_delay(int fd)
{
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    static int (*real_accept)(int, struct sockaddr *, socklen_t *);
    if (!real_accept)
        real_accept = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "accept");
    int s = real_accept(fd, addr, len);
    no_delay(s);
    return s;
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
    if (!real_accept4)
        real_accept4 =
            (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
    int s = real_accept4(fd, addr, len, flags);
    no_delay(s);
    return s;
}

static int write_addr(const char *path, const char *addr)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -errno;
    fprintf(f, "%s\n", addr);
    if (fclose(f) != 0 || rename(tmp, path) != 0)
        return -errno;
    return 0;
}

int main(void)
{
    log_init("devbroker", log_level_parse(cfg_str("LOG_LEVEL", "info")));
    int64_t port = 0, partitions = 0;
    if (cfg_int("DEVBROKER_PORT", 0, 65535, 0, &port) < 0 ||
        cfg_int("DEVBROKER_PARTITIONS", 1, 64, 4, &partitions) < 0)
        return 2;
    const char *addr_file = cfg_str("DEVBROKER_ADDR_FILE", "var/broker.addr");
    char *topics = strdup(cfg_str("DEVBROKER_TOPICS", "payment.requests,payment.results"));
    wanted_port = (uint16_t)port;

    /* Block the signals before librdkafka starts threads, so that they
     * inherit the mask and sigwait below receives them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    int rc = 1;
    rd_kafka_mock_cluster_t *mc = NULL;
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "4", err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        log_msg(LOG_ERROR, NULL, "cannot create the host client: %s", err);
        goto done;
    }
    mc = rd_kafka_mock_cluster_new(rk, 1);
    if (!mc) {
        log_msg(LOG_ERROR, NULL, "cannot start the mock cluster (port %d taken?)", (int)port);
        goto done;
    }
    for (char *save = NULL, *t = strtok_r(topics, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, t, (int)partitions, 1);
        if (e) {
            log_msg(LOG_ERROR, NULL, "cannot create topic %s: %s", t, rd_kafka_err2str(e));
            goto done;
        }
    }
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mc);
    if (write_addr(addr_file, bootstrap) < 0) {
        log_msg(LOG_ERROR, NULL, "cannot write %s: %s", addr_file, strerror(errno));
        goto done;
    }
    log_msg(LOG_INFO, NULL, "dev broker listening on %s, %d partitions per topic", bootstrap,
            (int)partitions);

    int sig = 0;
    sigwait(&stop, &sig);
    log_msg(LOG_INFO, NULL, "stopping on signal %d", sig);
    rc = 0;
done:
    if (mc)
        rd_kafka_mock_cluster_destroy(mc);
    if (rk)
        rd_kafka_destroy(rk);
    free(topics);
    return rc;
}
