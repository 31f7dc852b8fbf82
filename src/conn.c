/* A framed TCP connection over a bufferevent, with bounded frames and stall detection. */
#include "conn.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "log.h"
#include "loop.h"

#define CONN_FLUSH_TIMEOUT_S 5     /* how long conn_close_after_flush waits for the peer */
#define CONN_OUTPUT_HIGH (4 << 20) /* stop reading while this much output is queued */

struct conn {
    uint64_t id;                        /* process-unique, for logs */
    struct loop *loop;                  /* borrowed */
    struct bufferevent *bev;            /* owned */
    struct conn_limits limits;          /* copied */
    const struct conn_handler *handler; /* borrowed static table */
    void *arg;                          /* handler's argument (borrowed) */
    char peer[64];                      /* "ip:port" */
    bool closing;                       /* conn_close called: no more callbacks but the free */
    bool flushing;                      /* waiting for output to drain before closing */
    bool connected;                     /* outgoing: connect finished */
    bool in_read;                       /* inside on_read: defer the free */
    int64_t partial_since;              /* monotonic ms when a partial frame began, or 0 */
};

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static void conn_free_deferred(void *arg);

static uint64_t next_conn_id = 1; /* only touched via __atomic */

static struct conn *
conn_new(struct loop *loop, struct bufferevent *bev, const struct conn_limits *limits,
         const struct conn_handler *handler, void *arg)
{
    struct conn *c = xcalloc(1, sizeof(*c));
    c->id = __atomic_fetch_add(&next_conn_id, 1, __ATOMIC_RELAXED);
    c->loop = loop;
    c->bev = bev;
    c->limits = *limits;
    c->handler = handler;
    c->arg = arg;
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    return c;
}

static void
format_peer(const struct sockaddr *sa, char *out, size_t size)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        port = ntohs(in->sin_port);
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        port = ntohs(in6->sin6_port);
    }
    snprintf(out, size, "%s:%d", ip, port);
}

struct conn *
conn_accept(struct loop *loop, evutil_socket_t fd, const struct sockaddr *sa,
            const struct conn_limits *limits, const struct conn_handler *handler, void *arg)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct bufferevent *bev = bufferevent_socket_new(loop_base(loop), fd, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        evutil_closesocket(fd);
        return NULL;
    }
    struct conn *c = conn_new(loop, bev, limits, handler, arg);
    format_peer(sa, c->peer, sizeof(c->peer));
    c->connected = true;
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    return c;
}

struct conn *
conn_connect(struct loop *loop, const char *host, int port, const struct conn_limits *limits,
             const struct conn_handler *handler, void *arg)
{
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    char spec[300];
    snprintf(spec, sizeof(spec), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    if (evutil_parse_sockaddr_port(spec, (struct sockaddr *)&ss, &sslen) != 0) {
        /* Not a literal address: resolve synchronously (once per reconnect, names are local). */
        struct evutil_addrinfo hints = {0}, *res = NULL;
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        char portstr[16];
        snprintf(portstr, sizeof(portstr), "%d", port);
        if (evutil_getaddrinfo(host, portstr, &hints, &res) != 0 || res == NULL) {
            log_warn("resolve_failed", "host=%s", host);
            return NULL;
        }
        memcpy(&ss, res->ai_addr, res->ai_addrlen);
        sslen = (int)res->ai_addrlen;
        evutil_freeaddrinfo(res);
    }
    struct bufferevent *bev = bufferevent_socket_new(loop_base(loop), -1, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        return NULL;
    }
    struct conn *c = conn_new(loop, bev, limits, handler, arg);
    snprintf(c->peer, sizeof(c->peer), "%s:%d", host, port);
    if (bufferevent_socket_connect(bev, (struct sockaddr *)&ss, sslen) != 0) {
        bufferevent_free(bev);
        free(c);
        return NULL;
    }
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    return c;
}

/* A partial frame must complete within stall_ms of its first byte, however it trickles in.
 * Returns false if that deadline has already passed. */
static bool
update_stall_timer(struct conn *c, bool partial)
{
    if (c->limits.stall_ms <= 0) {
        return true;
    }
    if (!partial) {
        c->partial_since = 0;
        bufferevent_set_timeouts(c->bev, NULL, NULL);
        return true;
    }
    int64_t now = time_mono_ms();
    if (c->partial_since == 0) {
        c->partial_since = now;
    }
    int64_t left = c->partial_since + c->limits.stall_ms - now;
    if (left <= 0) {
        return false;
    }
    struct timeval tv = {(time_t)(left / 1000), (suseconds_t)((left % 1000) * 1000)};
    bufferevent_set_timeouts(c->bev, &tv, NULL);
    return true;
}

static void
on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    c->in_read = true;
    while (!c->closing) {
        size_t len = evbuffer_get_length(in);
        if (len == 0) {
            break;
        }
        const char *data = (const char *)evbuffer_pullup(in, -1);
        struct codec_frame frame;
        const char *why = NULL;
        int st = codec_decode(data, len, c->limits.max_frame, &frame, &why, NULL);
        if (st == CODEC_NEED_MORE) {
            break;
        }
        if (st == CODEC_ERROR) {
            log_warn("frame_rejected", "conn=%llu peer=%s reason=\"%s\"", (unsigned long long)c->id,
                     c->peer, why);
            conn_close(c, why);
            break;
        }
        evbuffer_drain(in, frame.consumed);
        c->partial_since = 0; /* the next frame's clock starts with its own first byte */
        c->handler->on_frame(c, frame.json, frame.has_nul, c->arg);
        cJSON_Delete(frame.json); /* the one place a decoded frame is freed */
    }
    c->in_read = false;
    if (!c->closing && !update_stall_timer(c, evbuffer_get_length(in) > 0)) {
        log_warn("frame_stalled", "conn=%llu peer=%s", (unsigned long long)c->id, c->peer);
        conn_close(c, "partial frame stalled");
    }
    if (!c->closing) {
        if (conn_pending_output(c) > CONN_OUTPUT_HIGH) {
            /* The peer is not reading its replies: stop reading its requests until it does. */
            bufferevent_disable(bev, EV_READ);
            bufferevent_setwatermark(bev, EV_WRITE, CONN_OUTPUT_HIGH / 2, 0);
        }
    }
}

static void
on_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    if (c->flushing && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        c->flushing = false;
        conn_close(c, "closed after flush");
        return;
    }
    if (!c->closing && !(bufferevent_get_enabled(bev) & EV_READ)) {
        bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
        bufferevent_enable(bev, EV_READ);
    }
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    UNUSED(bev);
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c->connected = true;
        if (c->handler->on_connect) {
            c->handler->on_connect(c, c->arg);
        }
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        if (c->flushing) {
            conn_close(c, "flush timed out");
        } else {
            log_warn("frame_stalled", "conn=%llu peer=%s", (unsigned long long)c->id, c->peer);
            conn_close(c, "partial frame stalled");
        }
        return;
    }
    if (what & BEV_EVENT_EOF) {
        size_t left = evbuffer_get_length(bufferevent_get_input(bev));
        conn_close(c, left ? "EOF in the middle of a frame" : "peer closed");
        return;
    }
    conn_close(c, c->connected ? "socket error" : "connect failed");
}

int
conn_send(struct conn *c, const cJSON *msg)
{
    if (c->closing || c->flushing) {
        return -1;
    }
    size_t len;
    char *frame = codec_encode(msg, &len);
    int rc = bufferevent_write(c->bev, frame, len);
    free(frame);
    return rc;
}

static void
conn_free_deferred(void *arg)
{
    struct conn *c = arg;
    bufferevent_free(c->bev);
    free(c);
}

void
conn_close(struct conn *c, const char *why)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    c->flushing = false;
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
    if (c->handler->on_close) {
        c->handler->on_close(c, why, c->arg);
    }
    loop_defer(c->loop, conn_free_deferred, c);
}

void
conn_close_after_flush(struct conn *c, const char *why)
{
    if (c->closing || c->flushing) {
        return;
    }
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        conn_close(c, why);
        return;
    }
    c->flushing = true;
    bufferevent_disable(c->bev, EV_READ);
    struct timeval tv = {CONN_FLUSH_TIMEOUT_S, 0};
    bufferevent_set_timeouts(c->bev, NULL, &tv);
}

bool
conn_is_closing(const struct conn *c)
{
    return c->closing || c->flushing;
}

uint64_t
conn_id(const struct conn *c)
{
    return c->id;
}

const char *
conn_peer(const struct conn *c)
{
    return c->peer;
}

size_t
conn_pending_output(const struct conn *c)
{
    return evbuffer_get_length(bufferevent_get_output(c->bev));
}
