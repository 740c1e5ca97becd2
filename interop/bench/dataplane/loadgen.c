/* Load generator for interop/bench/dataplane.sh.
 *
 *   loadgen ENTRIES_FILE RATE SECONDS SIZE
 *
 * ENTRIES_FILE: one line per entry, "A_PORT B_PORT VIA_PORT" (all on
 * 127.0.0.1). Binds one UDP socket per A and B port; sends SIZE-byte
 * datagrams alternately from A_i and B_i to VIA_i, round-robin over the
 * entries, RATE datagrams/s in total (0: as fast as it can), for SECONDS;
 * a second thread counts what arrives on every socket (epoll + recvmmsg).
 * Prints "sent=N send_failed=N received=N elapsed_s=T".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_ENTRIES 100000
#define BATCH 64

static int n;
static int afd[MAX_ENTRIES], bfd[MAX_ENTRIES];
static struct sockaddr_in via[MAX_ENTRIES];
static atomic_long received;
static atomic_int stop;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int bind_port(int port) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int sz = 1 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        fprintf(stderr, "loadgen: bind 127.0.0.1:%d: %s\n", port, strerror(errno));
        exit(1);
    }
    return fd;
}

static void *rx(void *arg) {
    int ep = (int)(long)arg;
    static char buf[BATCH][2048];
    struct iovec iov[BATCH];
    struct mmsghdr m[BATCH];
    struct epoll_event ev[256];
    memset(m, 0, sizeof m);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = buf[i];
        iov[i].iov_len = sizeof buf[i];
        m[i].msg_hdr.msg_iov = &iov[i];
        m[i].msg_hdr.msg_iovlen = 1;
    }
    while (!atomic_load(&stop)) {
        int k = epoll_wait(ep, ev, 256, 50);
        for (int j = 0; j < k; j++) {
            for (;;) {
                int r = recvmmsg(ev[j].data.fd, m, BATCH, MSG_DONTWAIT, NULL);
                if (r <= 0) break;
                atomic_fetch_add(&received, r);
                if (r < BATCH) break;
            }
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: loadgen ENTRIES_FILE RATE SECONDS SIZE\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "r");
    double rate = atof(argv[2]), secs = atof(argv[3]);
    int size = atoi(argv[4]);
    if (!f || size <= 0 || size > 2048) {
        fprintf(stderr, "loadgen: bad arguments\n");
        return 2;
    }
    int ep = epoll_create1(0);
    int a, b, v;
    while (n < MAX_ENTRIES && fscanf(f, "%d %d %d", &a, &b, &v) == 3) {
        afd[n] = bind_port(a);
        bfd[n] = bind_port(b);
        via[n].sin_family = AF_INET;
        via[n].sin_port = htons(v);
        via[n].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        struct epoll_event e = {.events = EPOLLIN};
        e.data.fd = afd[n];
        epoll_ctl(ep, EPOLL_CTL_ADD, afd[n], &e);
        e.data.fd = bfd[n];
        epoll_ctl(ep, EPOLL_CTL_ADD, bfd[n], &e);
        n++;
    }
    if (n == 0) {
        fprintf(stderr, "loadgen: no entries\n");
        return 2;
    }
    pthread_t t;
    pthread_create(&t, NULL, rx, (void *)(long)ep);
    char payload[2048];
    memset(payload, 0x80, sizeof payload);
    long sent = 0, failed = 0;
    double t0 = now(), elapsed;
    for (;;) {
        elapsed = now() - t0;
        if (elapsed >= secs) break;
        long target = rate > 0 ? (long)(rate * elapsed) : sent + 256;
        while (sent < target) {
            long e = (sent / 2) % n;
            int fd = (sent & 1) ? bfd[e] : afd[e];
            if (sendto(fd, payload, size, 0, (struct sockaddr *)&via[e], sizeof via[e]) < 0) failed++;
            sent++;
        }
        if (rate > 0) {
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
    }
    /* Let what is in flight arrive. */
    struct timespec drain = {0, 500000000};
    nanosleep(&drain, NULL);
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    printf("sent=%ld send_failed=%ld received=%ld elapsed_s=%.3f\n", sent, failed, atomic_load(&received), elapsed);
    return 0;
}
