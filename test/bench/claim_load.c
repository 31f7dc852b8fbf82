/*
 * Load generator for the chance role: keeps K chance.claim requests in flight over C
 * connections (NestJS framing) for N requests in total, and prints throughput and latency
 * percentiles as one JSON line. Also prints the claim script (--print-claim-script) so the
 * reference run (redis-benchmark EVALSHA) executes exactly the same Lua.
 *
 *   claim_load --port P --category C --requests N --inflight K [--conns C]
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "scripts.h"
#include "util.h"

struct lconn {
    int fd;
    struct sbuf in; /* bytes received, not yet decoded */
    int inflight;   /* requests outstanding on this conn */
};

static int
cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static int64_t
now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int
dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(0x7f000001)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        perror("connect");
        exit(1);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static void
send_claim(struct lconn *c, long long id, long long category, const char *run)
{
    char buf[512], body[400];
    int n = snprintf(body, sizeof(body),
                     "{\"pattern\":{\"cmd\":\"chance.claim\"},\"data\":{\"claim_id\":\"%s-%lld\","
                     "\"category\":%lld,\"user\":{\"id\":%lld,\"username\":\"bench%lld\"}},"
                     "\"id\":%lld}",
                     run, id, category, id, id, id);
    int m = snprintf(buf, sizeof(buf), "%d#%s", n, body);
    if (write(c->fd, buf, (size_t)m) != m) {
        perror("write");
        exit(1);
    }
    c->inflight++;
}

int
main(int argc, char **argv)
{
    int port = 0, inflight = 1, nconns = 0;
    long long category = 0, requests = 10000;
    const char *run = "r";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--print-claim-script") == 0) {
            fputs(script_sources[SCRIPT_CLAIM], stdout);
            return 0;
        } else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            port = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--category") == 0 && i + 1 < argc) {
            category = atoll(argv[++i]);
        } else if (strcmp(argv[i], "--requests") == 0 && i + 1 < argc) {
            requests = atoll(argv[++i]);
        } else if (strcmp(argv[i], "--inflight") == 0 && i + 1 < argc) {
            inflight = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--conns") == 0 && i + 1 < argc) {
            nconns = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--run") == 0 && i + 1 < argc) {
            run = argv[++i];
        } else {
            fprintf(stderr, "usage: claim_load --port P --category C --requests N --inflight K "
                            "[--conns C] [--run TAG] | --print-claim-script\n");
            return 64;
        }
    }
    if (nconns <= 0) {
        nconns = inflight < 8 ? inflight : 8;
    }
    struct lconn *conns = xcalloc((size_t)nconns, sizeof(*conns));
    struct pollfd *pfd = xcalloc((size_t)nconns, sizeof(*pfd));
    int64_t *sent_at = xcalloc((size_t)requests + 1, sizeof(int64_t));
    long long *lat = xcalloc((size_t)requests + 1, sizeof(long long));
    long long next = 1, done = 0, errors = 0;

    for (int i = 0; i < nconns; i++) {
        conns[i].fd = dial(port);
        pfd[i].fd = conns[i].fd;
        pfd[i].events = POLLIN;
    }
    int64_t start = now_us();
    for (int k = 0; k < inflight && next <= requests; k++) {
        struct lconn *c = &conns[k % nconns];
        sent_at[next] = now_us();
        send_claim(c, next, category, run);
        next++;
    }
    while (done < requests) {
        if (poll(pfd, (nfds_t)nconns, 10000) <= 0) {
            fprintf(stderr, "claim_load: no reply for 10 s\n");
            return 1;
        }
        for (int i = 0; i < nconns; i++) {
            if (!(pfd[i].revents & POLLIN)) {
                continue;
            }
            struct lconn *c = &conns[i];
            char buf[65536];
            ssize_t n = read(c->fd, buf, sizeof(buf));
            if (n <= 0) {
                fprintf(stderr, "claim_load: connection closed\n");
                return 1;
            }
            sbuf_append(&c->in, buf, (size_t)n);
            size_t off = 0;
            for (;;) {
                struct codec_frame f;
                const char *why;
                int st = codec_decode(c->in.data + off, c->in.len - off, 1 << 20, &f, &why, NULL);
                if (st != CODEC_COMPLETE) {
                    break;
                }
                off += f.consumed;
                long long id = (long long)cJSON_GetObjectItem(f.json, "id")->valuedouble;
                if (cJSON_GetObjectItem(f.json, "err")) {
                    errors++;
                }
                cJSON_Delete(f.json);
                lat[done++] = now_us() - sent_at[id];
                c->inflight--;
                if (next <= requests) {
                    sent_at[next] = now_us();
                    send_claim(c, next, category, run);
                    next++;
                }
            }
            memmove(c->in.data, c->in.data + off, c->in.len - off);
            c->in.len -= off;
        }
    }
    double secs = (double)(now_us() - start) / 1e6;
    qsort(lat, (size_t)done, sizeof(long long), cmp_ll);
    printf("{\"requests\":%lld,\"inflight\":%d,\"conns\":%d,\"seconds\":%.3f,\"per_second\":%.0f,"
           "\"p50_us\":%lld,\"p99_us\":%lld,\"errors\":%lld}\n",
           done, inflight, nconns, secs, (double)done / secs, lat[done / 2], lat[(done * 99) / 100],
           errors);
    return 0;
}
