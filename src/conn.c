/*
 * A framed TCP connection over a bufferevent (plain or TLS), with bounded frames, stall
 * detection, a linear-time frame decoder and read pausing.
 */
#include "conn.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "log.h"
#include "loop.h"
#include "tls.h"

#define CONN_FLUSH_TIMEOUT_S 5          /* how long conn_close_after_flush waits for the peer */
#define CONN_OUTPUT_HIGH (4 << 20)      /* stop reading while this much output is queued */
#define CONN_HANDSHAKE_DEFAULT_MS 10000 /* TLS handshake bound when stall_ms is 0 */

struct conn {
    uint64_t id;                        /* process-unique, for logs */
    struct loop *loop;                  /* borrowed */
    struct bufferevent *bev;            /* owned */
    struct conn_limits limits;          /* copied */
    const struct conn_handler *handler; /* borrowed static table */
    void *arg;                          /* handler's argument (borrowed) */
    char peer[128];                     /* "ip:port", or "name(ip):port" */
    bool closing;                       /* conn_close called: no more callbacks but the free */
    bool flushing;                      /* waiting for output to drain before closing */
    bool connected;                     /* connect (and TLS handshake) finished */
    bool in_read;                       /* inside on_read: defer the free */
    bool paused;                        /* conn_pause: no decoding, no reading */
    bool output_blocked;                /* too much output queued: no reading */
    bool tls;                           /* the bufferevent is an OpenSSL one */
    bool tls_failed;                    /* closed because the handshake failed */
    bool got_frame;                     /* a frame was decoded on this conn */
    int64_t partial_since;              /* monotonic ms when a partial frame began, or 0 */
    struct codec_decoder dec;           /* the frame being received */
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
    codec_decoder_init(&c->dec, limits->max_frame);
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    return c;
}

/* The TLS handshake must finish within this; the read timeout runs until it does. */
static void
set_handshake_deadline(struct conn *c)
{
    int ms = c->limits.stall_ms > 0 ? c->limits.stall_ms : CONN_HANDSHAKE_DEFAULT_MS;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    bufferevent_set_timeouts(c->bev, &tv, NULL);
}

/* Reading is on unless the conn is closing, paused or blocked on its own output. */
static void
update_reading(struct conn *c)
{
    if (c->closing || c->flushing) {
        return;
    }
    if (c->paused || c->output_blocked) {
        bufferevent_disable(c->bev, EV_READ);
    } else {
        bufferevent_enable(c->bev, EV_READ);
    }
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
            const struct conn_limits *limits, SSL_CTX *tls, const struct conn_handler *handler,
            void *arg)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct bufferevent *bev = NULL;
    if (tls) {
        SSL *ssl = SSL_new(tls);
        bev = ssl ? bufferevent_openssl_socket_new(loop_base(loop), fd, ssl,
                                                   BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE)
                  : NULL;
        if (bev == NULL && ssl) {
            SSL_free(ssl);
        }
    } else {
        bev = bufferevent_socket_new(loop_base(loop), fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (bev == NULL) {
        evutil_closesocket(fd);
        return NULL;
    }
    struct conn *c = conn_new(loop, bev, limits, handler, arg);
    format_peer(sa, c->peer, sizeof(c->peer));
    if (tls) {
        c->tls = true;
        /* A peer that closes without TLS's close_notify has just closed (EOF), no error. */
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
        set_handshake_deadline(c);
    } else {
        c->connected = true;
    }
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    return c;
}

struct conn *
conn_connect(struct loop *loop, const char *host, int port, const struct conn_limits *limits,
             SSL_CTX *tls, const struct conn_handler *handler, void *arg)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    /* A name is resolved synchronously (once per reconnect; names are local). */
    if (util_resolve(host, port, &ss, &sslen) != 0) {
        log_warn("resolve_failed", "host=%s", host);
        return NULL;
    }
    return conn_connect_addr(loop, host, &ss, sslen, limits, tls, handler, arg);
}

struct conn *
conn_connect_addr(struct loop *loop, const char *host, const struct sockaddr_storage *addr,
                  socklen_t addrlen, const struct conn_limits *limits, SSL_CTX *tls,
                  const struct conn_handler *handler, void *arg)
{
    struct bufferevent *bev;
    if (tls) {
        SSL *ssl = tls_client_ssl(tls, host); /* checks the certificate names host */
        bev = ssl ? bufferevent_openssl_socket_new(
                        loop_base(loop), -1, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE)
                  : NULL;
        if (bev == NULL && ssl) {
            SSL_free(ssl);
        }
    } else {
        bev = bufferevent_socket_new(loop_base(loop), -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (bev == NULL) {
        return NULL;
    }
    struct conn *c = conn_new(loop, bev, limits, handler, arg);
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (addr->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)addr;
        inet_ntop(AF_INET6, &a6->sin6_addr, ip, sizeof(ip));
        port = ntohs(a6->sin6_port);
    } else if (addr->ss_family == AF_INET) {
        const struct sockaddr_in *a4 = (const struct sockaddr_in *)addr;
        inet_ntop(AF_INET, &a4->sin_addr, ip, sizeof(ip));
        port = ntohs(a4->sin_port);
    }
    if (strcmp(ip, host) == 0) {
        snprintf(c->peer, sizeof(c->peer), strchr(ip, ':') ? "[%s]:%d" : "%s:%d", ip, port);
    } else {
        snprintf(c->peer, sizeof(c->peer), strchr(ip, ':') ? "%s([%s]):%d" : "%s(%s):%d", host, ip,
                 port);
    }
    if (tls) {
        c->tls = true;
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
        set_handshake_deadline(c); /* also bounds a server that accepts and never answers */
    }
    if (bufferevent_socket_connect(bev, (const struct sockaddr *)addr, (int)addrlen) != 0) {
        codec_decoder_cleanup(&c->dec);
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
    if (!partial || c->paused) { /* while paused, the wait is ours, not the peer's */
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

    /* Each received byte is handed to the decoder once, chunk by chunk as the buffer holds
     * them, and drained: the decoder keeps what an unfinished frame needs. */
    c->in_read = true;
    while (!c->closing && !c->paused) {
        struct evbuffer_iovec chunk;
        if (evbuffer_peek(in, -1, NULL, &chunk, 1) < 1 || chunk.iov_len == 0) {
            break;
        }
        struct codec_frame frame;
        const char *why = NULL;
        size_t used = 0;
        int st = codec_decoder_feed(&c->dec, chunk.iov_base, chunk.iov_len, &frame, &why, &used);
        if (st == CODEC_ERROR) {
            log_warn("frame_rejected", "conn=%llu peer=%s reason=\"%s\"", (unsigned long long)c->id,
                     c->peer, why);
            conn_close(c, why);
            break;
        }
        evbuffer_drain(in, used);
        if (st == CODEC_NEED_MORE) {
            continue;
        }
        c->partial_since = 0; /* the next frame's clock starts with its own first byte */
        c->got_frame = true;
        c->handler->on_frame(c, frame.json, frame.has_nul, c->arg);
        cJSON_Delete(frame.json); /* the one place a decoded frame is freed */
    }
    c->in_read = false;
    bool partial = codec_decoder_partial(&c->dec) || evbuffer_get_length(in) > 0;
    if (!c->closing && !update_stall_timer(c, partial)) {
        log_warn("frame_stalled", "conn=%llu peer=%s", (unsigned long long)c->id, c->peer);
        conn_close(c, "partial frame stalled");
    }
    if (!c->closing && !c->flushing && conn_pending_output(c) > CONN_OUTPUT_HIGH) {
        /* The peer is not reading its replies: stop reading its requests until it does. */
        c->output_blocked = true;
        bufferevent_setwatermark(bev, EV_WRITE, CONN_OUTPUT_HIGH / 2, 0);
        update_reading(c);
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
    if (!c->closing && c->output_blocked) {
        c->output_blocked = false;
        bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
        update_reading(c);
        if (!c->paused) {
            /* requests may wait in the input buffer: no new bytes will announce them */
            bufferevent_trigger(bev, EV_READ,
                                BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
        }
    }
}

/* Why a TLS handshake failed, from OpenSSL's errors and the certificate check, into out.
 * Returns false when OpenSSL saw no TLS problem (a plain socket error or EOF). */
static bool
tls_failure(struct conn *c, short what, char *out, size_t size)
{
    if (what & BEV_EVENT_TIMEOUT) {
        snprintf(out, size, "TLS handshake timed out");
        return true;
    }
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    BIO *rbio = ssl ? SSL_get_rbio(ssl) : NULL;
    if (rbio && BIO_number_read(rbio) == 0) {
        return false; /* connected and left without a byte: a port probe, not a handshake */
    }
    /* libevent lists SSL_get_error()'s code (SSL_ERROR_SSL, SSL_ERROR_SYSCALL: small numbers)
     * before OpenSSL's own error codes, which carry a library number in their high bits. */
    unsigned long e, first = 0;
    while ((e = bufferevent_get_openssl_error(c->bev)) != 0) {
        if (first == 0 && ERR_GET_LIB(e) != 0) {
            first = e;
        }
    }
    ERR_clear_error();
    if (first == 0) {
        return false;
    }
    const char *reason = ERR_reason_error_string(first);
    char code[64];
    if (reason == NULL) {
        snprintf(code, sizeof(code), "error %lx", first);
        reason = code;
    }
    long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (vr != X509_V_OK) {
        snprintf(out, size, "TLS handshake failed: %s (%s)", reason,
                 X509_verify_cert_error_string(vr));
    } else {
        snprintf(out, size, "TLS handshake failed: %s", reason);
    }
    return true;
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c->connected = true;
        if (c->tls) {
            bufferevent_set_timeouts(bev, NULL, NULL); /* the handshake deadline is met */
            char cn[128];
            tls_peer_cn(bufferevent_openssl_get_ssl(bev), cn, sizeof(cn));
            log_debug("tls_established", "conn=%llu peer=%s peer_cn=\"%s\"",
                      (unsigned long long)c->id, c->peer, cn);
        }
        if (c->handler->on_connect) {
            c->handler->on_connect(c, c->arg);
        }
        return;
    }
    if (c->tls && !c->connected) {
        char why[320];
        if (tls_failure(c, what, why, sizeof(why))) {
            c->tls_failed = true;
            conn_close(c, why);
        } else if (what & BEV_EVENT_EOF) {
            conn_close(c, "closed before the TLS handshake");
        } else {
            snprintf(why, sizeof(why), "connect failed: %s",
                     evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
            conn_close(c, why);
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
        bool left =
            evbuffer_get_length(bufferevent_get_input(bev)) > 0 || codec_decoder_partial(&c->dec);
        conn_close(c, left ? "EOF in the middle of a frame" : "peer closed");
        return;
    }
    if (c->tls && !c->got_frame) {
        /* With TLS 1.3 a client finishes its side of the handshake before the server has
         * checked the client's certificate: a refusal arrives as the first thing read. */
        char why[320];
        if (tls_failure(c, what, why, sizeof(why))) {
            c->tls_failed = true;
            conn_close(c, why);
            return;
        }
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
    codec_decoder_cleanup(&c->dec);
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

void
conn_pause(struct conn *c)
{
    if (c->paused || c->closing) {
        return;
    }
    c->paused = true;
    update_reading(c);
    if (c->limits.stall_ms > 0 && c->connected) {
        c->partial_since = 0;
        bufferevent_set_timeouts(c->bev, NULL, NULL);
    }
}

void
conn_resume(struct conn *c)
{
    if (!c->paused || c->closing) {
        return;
    }
    c->paused = false;
    update_reading(c);
    /* Frames may be buffered already: decode them on the next loop turn (libevent drops this
     * if the bufferevent is freed first). */
    bufferevent_trigger(c->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

bool
conn_tls_failed(const struct conn *c)
{
    return c->tls_failed;
}
