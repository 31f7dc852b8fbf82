/*
 * Load generator for the claim path, in two modes; prints one JSON line of results.
 *
 * chance mode: chance.claim straight to a chance role (NestJS framing), K requests in flight over
 * C connections, N requests in all; with --rate R the requests are sent on a fixed schedule (open
 * loop, R per second) and a latency counts from the scheduled send, so a stall is not hidden.
 *
 *   claim_load --port P --category C --requests N --inflight K [--conns C] [--rate R] [--run TAG]
 *
 * http mode: POST /api/v1/claims by keep-alive clients, each on its own connection with one
 * request outstanding (closed loop), for S seconds. Client i talks to port i mod (number of
 * ports), so several gateways get a round-robin split of the clients. Client i uses the tokens
 * i, i + clients, i + 2 * clients, ... of the file in turn (no two clients share a user, so no
 * two requests of one user are ever in flight together), a fresh Idempotency-Key per request,
 * and the categories in turn.
 *
 *   claim_load --http --ports P1[,P2...] --tokens FILE --categories C1[,C2...] --clients N
 *              --seconds S [--run TAG]
 *
 * --print-claim-script prints the Lua claim script, so the reference (redis-benchmark EVALSHA)
 * runs exactly the role's script.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "scripts.h"
#include "util.h"

#define MAX_LIST 64

static int64_t
now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int
cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

/* Latencies in microseconds, growable. */
struct lats {
    long long *v;
    size_t n, cap;
};

static void
lats_add(struct lats *l, long long us)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 4096;
        l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
    }
    l->v[l->n++] = us;
}

static long long
lats_pct(const struct lats *l, double q)
{
    if (l->n == 0) {
        return 0;
    }
    size_t i = (size_t)(q * (double)l->n);
    return l->v[i < l->n ? i : l->n - 1];
}

static int
dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(0x7f000001)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "claim_load: connect to port %d: %s\n", port, strerror(errno));
        exit(1);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static void
write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            fprintf(stderr, "claim_load: write: %s\n", strerror(errno));
            exit(1);
        }
        buf += n;
        len -= (size_t)n;
    }
}

/* "1,2,3" -> up to MAX_LIST numbers; returns how many, or -1 on a malformed list. */
static int
parse_list(const char *s, long long *out)
{
    int n = 0;
    while (*s) {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s || v <= 0 || n == MAX_LIST || (*end != ',' && *end != '\0')) {
            return -1;
        }
        out[n++] = v;
        s = *end ? end + 1 : end;
    }
    return n;
}

/* ---- chance mode ---- */

struct lconn {
    int fd;
    struct sbuf in; /* bytes received, not yet decoded */
};

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
    write_all(c->fd, buf, (size_t)m);
}

static int
chance_mode(int port, long long category, long long requests, int inflight, int nconns, double rate,
            const char *run)
{
    if (nconns <= 0) {
        nconns = inflight < 8 ? inflight : 8;
    }
    struct lconn *conns = xcalloc((size_t)nconns, sizeof(*conns));
    struct pollfd *pfd = xcalloc((size_t)nconns, sizeof(*pfd));
    int64_t *sent_at = xcalloc((size_t)requests + 1, sizeof(int64_t));
    struct lats lat = {0};
    long long next = 1, done = 0, errors = 0, outstanding = 0;
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = dial(port);
        pfd[i].fd = conns[i].fd;
        pfd[i].events = POLLIN;
    }
    int64_t start = now_us();
    while (done < requests) {
        /* send what is due: everything up to the window, or (paced) what the schedule says */
        int64_t now = now_us(), wait_ms = 10000;
        while (next <= requests && outstanding < inflight) {
            int64_t due = rate > 0 ? start + (int64_t)((double)(next - 1) * 1e6 / rate) : now;
            if (due > now) {
                wait_ms = (due - now + 999) / 1000;
                break;
            }
            sent_at[next] = due;
            send_claim(&conns[next % nconns], next, category, run);
            next++;
            outstanding++;
        }
        int pr = poll(pfd, (nfds_t)nconns, (int)wait_ms);
        if (pr < 0 && errno != EINTR) {
            perror("poll");
            return 1;
        }
        if (pr == 0 && outstanding > 0 && wait_ms >= 10000) {
            fprintf(stderr, "claim_load: no reply for 10 s\n");
            return 1;
        }
        for (int i = 0; i < nconns && pr > 0; i++) {
            if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR))) {
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
                if (st == CODEC_ERROR) {
                    fprintf(stderr, "claim_load: bad frame: %s\n", why);
                    return 1;
                }
                if (st != CODEC_COMPLETE) {
                    break;
                }
                off += f.consumed;
                const cJSON *idj = cJSON_GetObjectItem(f.json, "id");
                long long id = cJSON_IsNumber(idj) ? (long long)idj->valuedouble : 0;
                if (id < 1 || id >= next) {
                    fprintf(stderr, "claim_load: reply with an unknown id\n");
                    return 1;
                }
                if (cJSON_GetObjectItem(f.json, "err")) {
                    errors++;
                }
                cJSON_Delete(f.json);
                lats_add(&lat, now_us() - sent_at[id]);
                done++;
                outstanding--;
            }
            memmove(c->in.data, c->in.data + off, c->in.len - off);
            c->in.len -= off;
        }
    }
    double secs = (double)(now_us() - start) / 1e6;
    qsort(lat.v, lat.n, sizeof(long long), cmp_ll);
    printf("{\"mode\":\"chance\",\"requests\":%lld,\"inflight\":%d,\"conns\":%d,\"rate\":%.0f,"
           "\"seconds\":%.3f,\"per_second\":%.1f,\"p50_us\":%lld,\"p99_us\":%lld,\"max_us\":%lld,"
           "\"errors\":%lld}\n",
           done, inflight, nconns, rate, secs, (double)done / secs, lats_pct(&lat, 0.50),
           lats_pct(&lat, 0.99), lat.n ? lat.v[lat.n - 1] : 0, errors);
    for (int i = 0; i < nconns; i++) {
        close(conns[i].fd);
        sbuf_cleanup(&conns[i].in);
    }
    free(conns);
    free(pfd);
    free(sent_at);
    free(lat.v);
    return 0;
}

/* ---- http mode ---- */

struct hconn {
    int fd;
    int port;
    int client;         /* index of the client */
    long long count;    /* requests sent */
    int64_t sent_at;    /* 0: nothing outstanding */
    struct sbuf in;     /* response bytes not consumed yet */
    bool close_after;   /* the response said Connection: close */
    struct pollfd *pfd; /* its slot */
};

static char **
read_tokens(const char *path, int *count)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "claim_load: %s: %s\n", path, strerror(errno));
        exit(64);
    }
    char line[512], **t = NULL;
    int n = 0, cap = 0;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0') {
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            t = xrealloc(t, (size_t)cap * sizeof(*t));
        }
        t[n++] = xstrdup(line);
    }
    fclose(f);
    *count = n;
    return t;
}

static void
send_http(struct hconn *c, char **tokens, int ntokens, int nclients, const long long *cats,
          int ncats, const char *run)
{
    char body[64], req[1024];
    const char *token = tokens[(c->client + c->count * nclients) % ntokens];
    int bn = snprintf(body, sizeof(body), "{\"category\":%lld}", cats[c->count % ncats]);
    int n = snprintf(req, sizeof(req),
                     "POST /api/v1/claims HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                     "Idempotency-Key: %s-%d-%lld\r\nContent-Length: %d\r\n\r\n%s",
                     c->port, token, run, c->client, c->count, bn, body);
    if (n <= 0 || (size_t)n >= sizeof(req)) {
        fprintf(stderr, "claim_load: request too long (token?)\n");
        exit(64);
    }
    write_all(c->fd, req, (size_t)n);
    c->count++;
    c->sent_at = now_us();
}

/* Length of one complete response at the start of in (0: not complete yet, -1: malformed);
 * its status in *status. */
static long
http_response(struct hconn *c, int *status)
{
    const char *d = c->in.data;
    size_t len = c->in.len;
    const char *end = NULL;
    for (size_t i = 0; i + 3 < len; i++) {
        if (d[i] == '\r' && d[i + 1] == '\n' && d[i + 2] == '\r' && d[i + 3] == '\n') {
            end = d + i + 4;
            break;
        }
    }
    if (end == NULL) {
        return 0;
    }
    if (len < 12 || strncmp(d, "HTTP/1.", 7) != 0) {
        return -1;
    }
    *status = atoi(d + 9);
    long clen = -1;
    c->close_after = false;
    for (const char *p = d; p < end;) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (eol == NULL) {
            break;
        }
        if ((size_t)(eol - p) > 15 && strncasecmp(p, "Content-Length:", 15) == 0) {
            clen = strtol(p + 15, NULL, 10);
        } else if ((size_t)(eol - p) > 18 && strncasecmp(p, "Transfer-Encoding:", 18) == 0) {
            return -1; /* the claim route never streams */
        } else if ((size_t)(eol - p) > 11 && strncasecmp(p, "Connection:", 11) == 0 &&
                   strstr(p + 11, "close") != NULL && strstr(p + 11, "close") < eol) {
            c->close_after = true;
        }
        p = eol + 1;
    }
    if (clen < 0) {
        clen = 0; /* 204/304 carry none */
    }
    size_t total = (size_t)(end - d) + (size_t)clen;
    return len >= total ? (long)total : 0;
}

static int
http_mode(const long long *ports, int nports, const char *tokens_path, const long long *cats,
          int ncats, int nclients, double seconds, const char *run)
{
    int ntokens = 0;
    char **tokens = read_tokens(tokens_path, &ntokens);
    if (ntokens < nclients) {
        fprintf(stderr, "claim_load: %d tokens for %d clients: one user per client at least\n",
                ntokens, nclients);
        return 64;
    }
    struct hconn *conns = xcalloc((size_t)nclients, sizeof(*conns));
    struct pollfd *pfd = xcalloc((size_t)nclients, sizeof(*pfd));
    struct lats lat = {0};
    long long st_201 = 0, st_202 = 0, st_4xx = 0, st_5xx = 0, st_other = 0, reconnects = 0;
    for (int i = 0; i < nclients; i++) {
        conns[i].client = i;
        conns[i].port = (int)ports[i % nports];
        conns[i].fd = dial(conns[i].port);
        conns[i].pfd = &pfd[i];
        pfd[i].fd = conns[i].fd;
        pfd[i].events = POLLIN;
    }
    int64_t start = now_us(), stop = start + (int64_t)(seconds * 1e6), last = start;
    for (int i = 0; i < nclients; i++) {
        send_http(&conns[i], tokens, ntokens, nclients, cats, ncats, run);
    }
    int outstanding = nclients;
    while (outstanding > 0) {
        int pr = poll(pfd, (nfds_t)nclients, 30000);
        if (pr < 0 && errno != EINTR) {
            perror("poll");
            return 1;
        }
        if (pr == 0) {
            fprintf(stderr, "claim_load: no response for 30 s (%d outstanding)\n", outstanding);
            return 1;
        }
        for (int i = 0; i < nclients && pr > 0; i++) {
            struct hconn *c = &conns[i];
            if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) || c->sent_at == 0) {
                continue;
            }
            char buf[16384];
            ssize_t n = read(c->fd, buf, sizeof(buf));
            if (n <= 0) {
                fprintf(stderr, "claim_load: the server closed a connection mid-request\n");
                return 1;
            }
            sbuf_append(&c->in, buf, (size_t)n);
            int status = 0;
            long used = http_response(c, &status);
            if (used < 0) {
                fprintf(stderr, "claim_load: malformed response\n");
                return 1;
            }
            if (used == 0) {
                continue;
            }
            int64_t now = now_us();
            lats_add(&lat, now - c->sent_at);
            last = now;
            c->sent_at = 0;
            outstanding--;
            if (status == 201) {
                st_201++;
            } else if (status == 202) {
                st_202++;
            } else if (status >= 400 && status < 500) {
                st_4xx++;
            } else if (status >= 500) {
                st_5xx++;
            } else {
                st_other++;
            }
            memmove(c->in.data, c->in.data + used, c->in.len - (size_t)used);
            c->in.len -= (size_t)used;
            if (now >= stop) {
                continue; /* this client is done */
            }
            if (c->close_after) {
                close(c->fd);
                c->fd = dial(c->port);
                pfd[i].fd = c->fd;
                c->in.len = 0;
                reconnects++;
            }
            send_http(c, tokens, ntokens, nclients, cats, ncats, run);
            outstanding++;
        }
    }
    double secs = (double)(last - start) / 1e6;
    qsort(lat.v, lat.n, sizeof(long long), cmp_ll);
    printf("{\"mode\":\"http\",\"clients\":%d,\"ports\":%d,\"seconds\":%.3f,\"responses\":%zu,"
           "\"ok\":%lld,\"per_second\":%.1f,\"p50_us\":%lld,\"p90_us\":%lld,\"p99_us\":%lld,"
           "\"max_us\":%lld,\"status\":{\"201\":%lld,\"202\":%lld,\"4xx\":%lld,\"5xx\":%lld,"
           "\"other\":%lld},\"reconnects\":%lld}\n",
           nclients, nports, secs, lat.n, st_201, (double)st_201 / secs, lats_pct(&lat, 0.50),
           lats_pct(&lat, 0.90), lats_pct(&lat, 0.99), lat.n ? lat.v[lat.n - 1] : 0, st_201, st_202,
           st_4xx, st_5xx, st_other, reconnects);
    for (int i = 0; i < nclients; i++) {
        close(conns[i].fd);
        sbuf_cleanup(&conns[i].in);
    }
    for (int i = 0; i < ntokens; i++) {
        free(tokens[i]);
    }
    free(tokens);
    free(conns);
    free(pfd);
    free(lat.v);
    return 0;
}

static void
usage(void)
{
    fprintf(stderr,
            "usage: claim_load --port P --category C --requests N --inflight K [--conns C]\n"
            "                  [--rate R] [--run TAG]\n"
            "       claim_load --http --ports P1[,P2...] --tokens FILE --categories C1[,C2...]\n"
            "                  --clients N --seconds S [--run TAG]\n"
            "       claim_load --print-claim-script\n");
}

int
main(int argc, char **argv)
{
    int port = 0, inflight = 1, nconns = 0, clients = 64, nports = 0, ncats = 0;
    long long category = 0, requests = 10000, ports[MAX_LIST], cats[MAX_LIST];
    double rate = 0, seconds = 10;
    bool http = false;
    const char *run = "r", *tokens = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--print-claim-script") == 0) {
            fputs(script_sources[SCRIPT_CLAIM], stdout);
            return 0;
        } else if (strcmp(a, "--http") == 0) {
            http = true;
            continue;
        } else if (v == NULL) {
            usage();
            return 64;
        } else if (strcmp(a, "--port") == 0) {
            port = atoi(v);
        } else if (strcmp(a, "--category") == 0) {
            category = atoll(v);
        } else if (strcmp(a, "--requests") == 0) {
            requests = atoll(v);
        } else if (strcmp(a, "--inflight") == 0) {
            inflight = atoi(v);
        } else if (strcmp(a, "--conns") == 0) {
            nconns = atoi(v);
        } else if (strcmp(a, "--rate") == 0) {
            rate = atof(v);
        } else if (strcmp(a, "--run") == 0) {
            run = v;
        } else if (strcmp(a, "--ports") == 0) {
            nports = parse_list(v, ports);
        } else if (strcmp(a, "--categories") == 0) {
            ncats = parse_list(v, cats);
        } else if (strcmp(a, "--tokens") == 0) {
            tokens = v;
        } else if (strcmp(a, "--clients") == 0) {
            clients = atoi(v);
        } else if (strcmp(a, "--seconds") == 0) {
            seconds = atof(v);
        } else {
            usage();
            return 64;
        }
        i++;
    }
    if (http) {
        if (nports <= 0 || ncats <= 0 || tokens == NULL || clients < 1 || seconds <= 0) {
            usage();
            return 64;
        }
        return http_mode(ports, nports, tokens, cats, ncats, clients, seconds, run);
    }
    if (port <= 0 || category <= 0 || requests < 1 || inflight < 1 || rate < 0) {
        usage();
        return 64;
    }
    return chance_mode(port, category, requests, inflight, nconns, rate, run);
}
