/* The loopback ceiling for interop/bench/dataplane.sh: the least a UDP
 * forwarder can do. One socket on 127.0.0.1:PORT, one thread, a table from
 * source port to destination port, recvmmsg (blocking for the first
 * datagram) and sendmmsg of the batch from the buffers it arrived in.
 *
 *   minfwd PORT ENTRIES_FILE      (lines "A_PORT B_PORT ...": A<->B)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH 64

static unsigned short peer[65536];

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: minfwd PORT ENTRIES_FILE\n");
        return 2;
    }
    FILE *f = fopen(argv[2], "r");
    int a, b, v;
    while (f && fscanf(f, "%d %d %d", &a, &b, &v) == 3) {
        peer[a] = b;
        peer[b] = a;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int sz = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    me.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&me, sizeof me) != 0) {
        perror("minfwd: bind");
        return 1;
    }
    static char buf[BATCH][2048];
    struct sockaddr_in src[BATCH], dst[BATCH];
    struct iovec riov[BATCH], siov[BATCH];
    struct mmsghdr rm[BATCH], sm[BATCH];
    memset(rm, 0, sizeof rm);
    memset(sm, 0, sizeof sm);
    for (int i = 0; i < BATCH; i++) {
        riov[i].iov_base = buf[i];
        riov[i].iov_len = sizeof buf[i];
        rm[i].msg_hdr.msg_iov = &riov[i];
        rm[i].msg_hdr.msg_iovlen = 1;
        rm[i].msg_hdr.msg_name = &src[i];
        sm[i].msg_hdr.msg_iov = &siov[i];
        sm[i].msg_hdr.msg_iovlen = 1;
        sm[i].msg_hdr.msg_name = &dst[i];
        sm[i].msg_hdr.msg_namelen = sizeof dst[i];
    }
    for (;;) {
        for (int i = 0; i < BATCH; i++) rm[i].msg_hdr.msg_namelen = sizeof src[i];
        int n = recvmmsg(fd, rm, BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("minfwd: recvmmsg");
            return 1;
        }
        int k = 0;
        for (int i = 0; i < n; i++) {
            unsigned short to = peer[ntohs(src[i].sin_port)];
            if (!to) continue;
            dst[k] = src[i];
            dst[k].sin_port = htons(to);
            siov[k].iov_base = buf[i];
            siov[k].iov_len = rm[i].msg_len;
            k++;
        }
        for (int off = 0; off < k;) {
            int r = sendmmsg(fd, sm + off, k - off, 0);
            off += r > 0 ? r : 1;
        }
    }
}
