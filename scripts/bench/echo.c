/*
 * The smallest RTP echo that does the same job as voicebot1's: one thread per session, each a
 * UDP socket bound to its port and connect()ed to its peer, then recv/send until killed. What it
 * costs per packet is what the kernel costs; scripts/bench-echo.sh compares voicebot1's echo
 * with it.
 *
 *   echo-min HOST FIRST_PORT SESSIONS PEER_HOST PEER_PORT
 *
 * Prints "ready" on stdout once every socket is bound and connected; exits when stdin closes.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void *session(void *arg) {
    int fd = (int)(long)arg;
    unsigned char buf[2048];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n > 0)
            send(fd, buf, (size_t)n, 0);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s HOST FIRST_PORT SESSIONS PEER_HOST PEER_PORT\n", argv[0]);
        return 2;
    }
    int first = atoi(argv[2]), sessions = atoi(argv[3]);
    struct sockaddr_in local = {.sin_family = AF_INET}, peer = {.sin_family = AF_INET};
    if (inet_pton(AF_INET, argv[1], &local.sin_addr) != 1 || inet_pton(AF_INET, argv[4], &peer.sin_addr) != 1) {
        fprintf(stderr, "bad address\n");
        return 2;
    }
    peer.sin_port = htons((unsigned short)atoi(argv[5]));
    /* The same stack size as voicebot1's echo threads. */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (int i = 0; i < sessions; i++) {
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        local.sin_port = htons((unsigned short)(first + i));
        if (fd < 0 || bind(fd, (struct sockaddr *)&local, sizeof local) < 0 ||
            connect(fd, (struct sockaddr *)&peer, sizeof peer) < 0) {
            perror("socket/bind/connect");
            return 1;
        }
        pthread_t t;
        if (pthread_create(&t, &attr, session, (void *)(long)fd) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    printf("ready\n");
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {
    }
    return 0;
}
