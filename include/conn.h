/*
 * One TCP peer speaking NestJS framing: a bufferevent (plain, or TLS through libevent's OpenSSL
 * bufferevents), the incremental frame decoder, and the owner's callbacks. Used by the RPC
 * server (accepted conns) and the RPC client (outgoing conns).
 *
 * Lifetime: conn_close() marks the conn closing, calls on_close once, and frees it on the loop
 * after the current callback chain, so a callback may close its own conn safely.
 */
#ifndef CHANCED_CONN_H
#define CHANCED_CONN_H

#include <cjson/cJSON.h>
#include <event2/util.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <stdint.h>

#include "util.h"

struct conn;
struct loop;

struct conn_handler {
    /* A decoded frame; msg is borrowed until the callback returns (detach to keep parts).
     * has_nul: some string held \u0000 (cJSON truncated it there): treat as bad input. */
    void (*on_frame)(struct conn *conn, cJSON *msg, bool has_nul, void *arg);
    /* The conn is closing (peer EOF, error, or conn_close); called exactly once. */
    void (*on_close)(struct conn *conn, const char *why, void *arg);
    /* The conn is usable: outgoing, the TCP connect (and TLS handshake) finished; accepted
     * TLS conns, the handshake finished (plain accepted conns are usable at once). May be
     * NULL. */
    void (*on_connect)(struct conn *conn, void *arg);
};

struct conn_limits {
    size_t max_frame; /* largest accepted frame, in UTF-16 units */
    int stall_ms;     /* a partial frame older than this closes the conn; 0 = no limit. With
                       * TLS it also bounds the handshake (10 s when 0). */
};

/*
 * Wraps an accepted socket (takes ownership of fd). With tls (borrowed; must outlive the conn)
 * the peer must complete a TLS handshake first: nothing it sends is decoded before that.
 */
struct conn *conn_accept(struct loop *loop, evutil_socket_t fd, const struct sockaddr *sa,
                         const struct conn_limits *limits, SSL_CTX *tls,
                         const struct conn_handler *handler, void *arg);
/* Starts a non-blocking connect to host:port, then with tls a handshake that checks the
 * server's certificate against host (tls_client_ssl); on_connect or on_close follows. NULL on
 * error. */
struct conn *conn_connect(struct loop *loop, const char *host, int port,
                          const struct conn_limits *limits, SSL_CTX *tls,
                          const struct conn_handler *handler, void *arg);
/* Like conn_connect, to an address already resolved; host names the peer (its certificate is
 * checked against it, and logs show it with the address). */
struct conn *conn_connect_addr(struct loop *loop, const char *host,
                               const struct sockaddr_storage *addr, socklen_t addrlen,
                               const struct conn_limits *limits, SSL_CTX *tls,
                               const struct conn_handler *handler, void *arg);

/* Encodes and queues msg (borrowed). -1 if the conn is closing. */
int conn_send(struct conn *conn, const cJSON *msg) MUSTCHECK;
/* Closes now (pending output is dropped). */
void conn_close(struct conn *conn, const char *why);
/* Stops reading, flushes pending output (bounded by a short timeout), then closes. */
void conn_close_after_flush(struct conn *conn, const char *why);

bool conn_is_closing(const struct conn *conn);
uint64_t conn_id(const struct conn *conn);
/* "ip:port" of the peer; borrowed, valid for the conn's life. */
const char *conn_peer(const struct conn *conn);
/* Bytes queued for sending (for backpressure decisions). */
size_t conn_pending_output(const struct conn *conn);
/*
 * Stops decoding frames (after the current one) and reading the socket, so the peer's further
 * requests wait in its kernel buffers; conn_resume carries on with what is buffered. A stall
 * deadline does not run while paused.
 */
void conn_pause(struct conn *conn);
void conn_resume(struct conn *conn);
/* True if the conn closed because its TLS handshake failed (bad or missing certificate, not
 * TLS at all, or too slow): the reason was the why given to on_close. */
bool conn_tls_failed(const struct conn *conn);

#endif
