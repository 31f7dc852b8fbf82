/*
 * The Redis client's connections (redis_int.h): connect (TCP, TLS or unix socket), the
 * handshake (AUTH, cluster detection, SELECT, SCRIPT LOAD), replies read with hiredis' reader,
 * failures, the cluster slot map and the periodic health checks.
 */
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "log.h"
#include "loop.h"
#include "redis_int.h"
#include "tls.h"

static const char *
node_name(const struct rnode *n, char *buf, size_t size)
{
    if (n->host[0] == '\0') {
        snprintf(buf, size, "%s", n->r->url.path ? n->r->url.path : "?");
    } else {
        snprintf(buf, size, strchr(n->host, ':') ? "[%s]:%d" : "%s:%d", n->host, n->port);
    }
    return buf;
}

/* ---- replies ---- */

static void
on_read(struct bufferevent *bev, void *arg)
{
    struct rnode *n = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_iovec v[8];
    int nv = evbuffer_peek(in, -1, NULL, v, 8);
    size_t fed = 0;
    for (int i = 0; i < nv && i < 8; i++) {
        if (redisReaderFeed(n->reader, v[i].iov_base, v[i].iov_len) != REDIS_OK) {
            redis_node_fail(n, "unreadable reply");
            return;
        }
        fed += v[i].iov_len;
    }
    evbuffer_drain(in, fed);
    n->last_io_ms = time_mono_ms();
    for (;;) {
        void *reply = NULL;
        if (redisReaderGetReply(n->reader, &reply) != REDIS_OK) {
            redis_node_fail(n, n->reader && n->reader->errstr[0] ? n->reader->errstr
                                                                 : "protocol error");
            return;
        }
        if (reply == NULL) {
            break;
        }
        struct rreq *q = n->sent_head;
        if (q == NULL) {
            freeReplyObject(reply);
            redis_node_fail(n, "a reply nobody asked for");
            return;
        }
        n->sent_head = q->next;
        if (n->sent_head == NULL) {
            n->sent_tail = NULL;
        }
        enum node_state before = n->state;
        redis_dispatch(n, q, reply);
        freeReplyObject(reply);
        if (n->state == NODE_DOWN || (before != NODE_DOWN && n->bev != bev)) {
            return; /* the callback dropped this connection */
        }
    }
    if (evbuffer_get_length(in) > 0) {
        on_read(bev, arg); /* more than 8 chunks were waiting */
    }
}

/* ---- nodes ---- */

static void
flush_waiting(struct rnode *n)
{
    while (n->wait_head && n->state == NODE_UP) {
        struct bcmd *c = n->wait_head;
        redis_wait_unlink(c);
        redis_route(c); /* re-routed: the map may have moved its slot meanwhile */
    }
}

static void
node_up(struct rnode *n)
{
    struct redis *r = n->r;
    char name[300];
    n->state = NODE_UP;
    backoff_reset(&n->bo);
    log_info("redis_connected", "node=%s mode=%s scripts=%zu", node_name(n, name, sizeof(name)),
             r->mode == MODE_CLUSTER ? "cluster" : "standalone", r->nscripts);
    flush_waiting(n);
    redis_check_ready(r);
}

static void
on_script_loaded(struct rnode *n, const redisReply *rep, void *arg)
{
    size_t last = (size_t)(uintptr_t)arg;
    if (rep == NULL) {
        return; /* the node failed; redis_node_fail handled it */
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        char why[300];
        snprintf(why, sizeof(why), "SCRIPT LOAD: %.200s", rep->str);
        redis_node_fail(n, why);
        return;
    }
    if (last) {
        node_up(n);
    }
}

static void
hs_scripts(struct rnode *n)
{
    struct redis *r = n->r;
    if (r->nscripts == 0) {
        node_up(n);
        return;
    }
    for (size_t i = 0; i < r->nscripts; i++) {
        const char *argv[] = {"SCRIPT", "LOAD", r->scripts[i]};
        redis_node_internal(n, on_script_loaded, (void *)(uintptr_t)(i + 1 == r->nscripts), 3, argv,
                            NULL);
    }
}

static void
on_selected(struct rnode *n, const redisReply *rep, void *arg)
{
    UNUSED(arg);
    if (rep == NULL) {
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        char why[300];
        snprintf(why, sizeof(why), "SELECT %d: %.200s", n->r->url.db, rep->str);
        redis_node_fail(n, why);
        return;
    }
    hs_scripts(n);
}

static void
hs_select(struct rnode *n)
{
    struct redis *r = n->r;
    if (r->mode == MODE_STANDALONE && r->url.db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", r->url.db);
        const char *argv[] = {"SELECT", db};
        redis_node_internal(n, on_selected, NULL, 2, argv, NULL);
        return;
    }
    hs_scripts(n);
}

static void apply_map(struct redis *r, const redisReply *rep, const char *seed_host);

static void
on_first_slots(struct rnode *n, const redisReply *rep, void *arg)
{
    struct redis *r = n->r;
    UNUSED(arg);
    if (rep == NULL) {
        return;
    }
    if (rep->type == REDIS_REPLY_ARRAY) {
        if (r->url.db != 0) {
            log_error("redis_config_error",
                      "reason=\"redis_url names database %d, but a Redis Cluster has only 0\"",
                      r->url.db);
            redis_node_fail(n, "database index in a cluster");
            return;
        }
        r->mode = MODE_CLUSTER;
        log_info("redis_cluster_detected", "ranges=%zu", rep->elements);
        apply_map(r, rep, n->host);
    } else if (rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOPERM", 6) == 0) {
        /* Refused by an ACL: whether this is a cluster is unknown, so do not guess. */
        char why[300];
        snprintf(why, sizeof(why), "CLUSTER SLOTS: %.200s (the Redis user needs +cluster|slots)",
                 rep->str);
        redis_node_fail(n, why);
        return;
    } else if (r->mode == MODE_UNKNOWN) {
        r->mode = MODE_STANDALONE; /* "ERR This instance has cluster support disabled" */
    }
    hs_select(n);
}

static void
on_auth(struct rnode *n, const redisReply *rep, void *arg)
{
    UNUSED(arg);
    if (rep == NULL) {
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        char why[300];
        snprintf(why, sizeof(why), "AUTH: %.200s", rep->str);
        redis_node_fail(n, why);
        return;
    }
    if (n->r->mode == MODE_UNKNOWN) {
        const char *argv[] = {"CLUSTER", "SLOTS"};
        redis_node_internal(n, on_first_slots, NULL, 2, argv, NULL);
        return;
    }
    hs_select(n);
}

static void
hs_start(struct rnode *n)
{
    struct redis *r = n->r;
    n->state = NODE_HANDSHAKE;
    if (r->url.password) {
        const char *argv[] = {"AUTH", r->url.user, r->url.password};
        if (r->url.user) {
            redis_node_internal(n, on_auth, NULL, 3, argv, NULL);
        } else {
            argv[1] = r->url.password;
            redis_node_internal(n, on_auth, NULL, 2, argv, NULL);
        }
        return;
    }
    on_auth(n, &(redisReply){.type = REDIS_REPLY_STATUS, .str = "OK", .len = 2}, NULL);
}

/*
 * Why a TLS connection failed, as precisely as can be said: the certificate check that failed
 * (the server's certificate against redis_tls_ca and the address or name), else OpenSSL's
 * error (e.g. the server's alert that it wants a client certificate), else the socket's.
 * libevent also queues bare SSL_get_error() codes: with no socket error, the peer closed the
 * connection.
 */
static void
tls_failure(struct bufferevent *bev, char *why, size_t size)
{
    int sock_err = EVUTIL_SOCKET_ERROR();
    unsigned long e, lib_err = 0;
    bool bare = false;
    while ((e = bufferevent_get_openssl_error(bev)) != 0) {
        if (ERR_GET_LIB(e) == 0) {
            bare = true;
        } else if (lib_err == 0) {
            lib_err = e;
        }
    }
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (vr != X509_V_OK) {
        snprintf(why, size, "TLS: the server's certificate does not verify: %s",
                 X509_verify_cert_error_string(vr));
    } else if (lib_err) {
        char buf[256];
        ERR_error_string_n(lib_err, buf, sizeof(buf));
        snprintf(why, size, "TLS: %s", buf);
    } else if (bare && (sock_err == 0 || sock_err == EAGAIN || sock_err == EINPROGRESS)) {
        snprintf(why, size, "TLS: the server closed the connection");
    } else {
        snprintf(why, size, "%s", evutil_socket_error_to_string(sock_err));
    }
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
    struct rnode *n = arg;
    UNUSED(bev);
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        if (n->host[0]) {
            setsockopt(bufferevent_getfd(n->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        hs_start(n);
        return;
    }
    char why[300] = "connection closed";
    if ((what & BEV_EVENT_ERROR) && n->r->tls) {
        tls_failure(n->bev, why, sizeof(why));
    } else if (what & BEV_EVENT_ERROR) {
        snprintf(why, sizeof(why), "%s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    }
    redis_node_fail(n, why);
}

static void
on_retry(evutil_socket_t fd, short what, void *arg)
{
    UNUSED(fd);
    UNUSED(what);
    redis_node_connect(arg);
}

/* Starts a non-blocking connect; failures come back through on_event or redis_node_fail. */
void
redis_node_connect(struct rnode *n)
{
    struct redis *r = n->r;
    if (n->state != NODE_DOWN || r->freeing) {
        return;
    }
    struct sockaddr_storage ss;
    socklen_t sslen = 0;
    if (n->host[0] == '\0') {
        struct sockaddr_un *un = (struct sockaddr_un *)&ss;
        memset(un, 0, sizeof(*un));
        un->sun_family = AF_UNIX;
        snprintf(un->sun_path, sizeof(un->sun_path), "%s", r->url.path);
        sslen = sizeof(*un);
    } else if (util_resolve(n->host, n->port, &ss, &sslen) != 0) {
        redis_node_fail(n, "cannot resolve the host name");
        return;
    }
    struct bufferevent *bev;
    if (r->tls) {
        SSL *ssl = tls_client_ssl(r->tls, n->host);
        bev =
            ssl ? bufferevent_openssl_socket_new(loop_base(r->loop), -1, ssl,
                                                 BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE)
                : NULL;
    } else {
        bev = bufferevent_socket_new(loop_base(r->loop), -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (bev == NULL) {
        redis_node_fail(n, "out of resources");
        return;
    }
    n->bev = bev;
    n->reader = redisReaderCreate();
    n->state = NODE_CONNECTING;
    n->last_io_ms = time_mono_ms();
    bufferevent_setcb(bev, on_read, NULL, on_event, n);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(bev, (struct sockaddr *)&ss, (int)sslen) != 0) {
        redis_node_fail(n, "connect failed");
    }
}

/*
 * Drops the connection: every command written and unanswered completes with no reply (its
 * outcome is unknown), commands parked here stay parked (a reconnect or a new map takes them),
 * and a reconnect is scheduled unless the node no longer serves anything.
 */
void
redis_node_fail(struct rnode *n, const char *why)
{
    struct redis *r = n->r;
    char name[300];
    bool was_up = n->state == NODE_UP;
    if (n->bev) {
        bufferevent_free(n->bev);
        n->bev = NULL;
    }
    if (n->reader) {
        redisReaderFree(n->reader);
        n->reader = NULL;
    }
    n->state = NODE_DOWN;
    struct rreq *q = n->sent_head;
    n->sent_head = n->sent_tail = NULL;
    if (!r->freeing) {
        if (was_up) {
            log_warn("redis_disconnected", "node=%s reason=\"%s\"",
                     node_name(n, name, sizeof(name)), why);
        } else {
            char msg[400];
            snprintf(msg, sizeof(msg), "%s: %s", node_name(n, name, sizeof(name)), why);
            backoff_fail(&n->bo, "redis_connect_failed", msg);
        }
    }
    while (q) {
        struct rreq *next = q->next;
        redis_dispatch(n, q, NULL);
        q = next;
    }
    if (r->freeing) {
        return;
    }
    bool needed = r->mode != MODE_CLUSTER || n->mapped || n->seed || n->wait_head;
    if (needed && !event_pending(n->retry, EV_TIMEOUT, NULL)) {
        int ms = was_up ? BACKOFF_MIN_MS : backoff_next(&n->bo);
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        event_add(n->retry, &tv);
    }
    if (r->mode != MODE_CLUSTER && r->url.nhosts > 1 && !was_up) {
        /* Standalone with alternatives: the next attempt goes to the next host. */
        r->next_seed = (r->next_seed + 1) % r->url.nhosts;
        snprintf(n->host, sizeof(n->host), "%s", r->url.hosts[r->next_seed].host);
        n->port = r->url.hosts[r->next_seed].port;
    }
    if (r->mode == MODE_CLUSTER) {
        redis_refresh_map(r, true);
    }
    redis_check_ready(r);
}

struct rnode *
redis_node_add(struct redis *r, const char *host, int port, bool seed)
{
    if (r->nnodes == MAX_NODES) {
        return NULL;
    }
    struct rnode *n = xcalloc(1, sizeof(*n));
    n->r = r;
    snprintf(n->host, sizeof(n->host), "%s", host);
    n->port = port;
    n->seed = seed;
    n->state = NODE_DOWN;
    n->retry = event_new(loop_base(r->loop), -1, 0, on_retry, n);
    backoff_init(&n->bo, BACKOFF_MIN_MS, BACKOFF_MAX_MS);
    r->nodes[r->nnodes++] = n;
    return n;
}

/* The node for host:port, created (and connecting) if new. */
struct rnode *
redis_node_get(struct redis *r, const char *host, int port)
{
    for (size_t i = 0; i < r->nnodes; i++) {
        if (r->nodes[i]->port == port && strcmp(r->nodes[i]->host, host) == 0) {
            return r->nodes[i];
        }
    }
    struct rnode *n = redis_node_add(r, host, port, false);
    if (n) {
        redis_node_connect(n);
    }
    return n;
}

/* ---- cluster map ---- */

static void
apply_map(struct redis *r, const redisReply *rep, const char *seed_host)
{
    if (cluster_map_parse(rep, seed_host, r->map) != 0) {
        log_warn("redis_cluster_map_invalid", "ranges=%zu", rep->elements);
        return;
    }
    for (size_t i = 0; i < r->nnodes; i++) {
        r->nodes[i]->mapped = false;
    }
    struct rnode *by_index[CLUSTER_MAX_NODES] = {0};
    for (size_t i = 0; i < r->map->nnodes; i++) {
        by_index[i] = redis_node_get(r, r->map->nodes[i].host, r->map->nodes[i].port);
        if (by_index[i]) {
            by_index[i]->mapped = true;
        }
    }
    for (int s = 0; s < CLUSTER_SLOTS; s++) {
        int idx = r->map->slot_node[s];
        r->slot_node[s] = idx >= 0 ? by_index[idx] : NULL;
    }
    r->map_complete = cluster_map_complete(r->map);
    /* Commands parked on a node that lost its slots go where the slots are now. */
    for (size_t i = 0; i < r->nnodes; i++) {
        struct rnode *n = r->nodes[i];
        struct bcmd *c = n->wait_head;
        while (c) {
            struct bcmd *next = c->wnext;
            struct rnode *t = redis_target_node(r, c);
            if (t && t != n) {
                redis_wait_unlink(c);
                redis_route(c);
            }
            c = next;
        }
        if (n->state == NODE_UP) {
            flush_waiting(n);
        }
    }
    redis_check_ready(r);
}

static void
on_slots(struct rnode *n, const redisReply *rep, void *arg)
{
    struct redis *r = n->r;
    UNUSED(arg);
    r->refreshing = false;
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
        return;
    }
    apply_map(r, rep, n->host);
}

void
redis_refresh_map(struct redis *r, bool force)
{
    int64_t now = time_mono_ms();
    if (r->mode != MODE_CLUSTER || r->refreshing || r->freeing ||
        (!force && now - r->refreshed_ms < REFRESH_MIN_MS)) {
        return;
    }
    struct rnode *from = NULL;
    for (size_t i = 0; i < r->nnodes && from == NULL; i++) {
        if (r->nodes[i]->state == NODE_UP) {
            from = r->nodes[i];
        }
    }
    if (from == NULL) {
        for (size_t i = 0; i < r->nnodes; i++) { /* nobody up: knock on every seed */
            if (r->nodes[i]->seed && !event_pending(r->nodes[i]->retry, EV_TIMEOUT, NULL)) {
                redis_node_connect(r->nodes[i]);
            }
        }
        return;
    }
    r->refreshing = true;
    r->refreshed_ms = now;
    const char *argv[] = {"CLUSTER", "SLOTS"};
    redis_node_internal(from, on_slots, NULL, 2, argv, NULL);
}

/* ---- health ---- */

bool
redis_ready(const struct redis *r)
{
    if (r->mode == MODE_STANDALONE) {
        return r->nnodes > 0 && r->nodes[0]->state == NODE_UP;
    }
    if (r->mode != MODE_CLUSTER || !r->map_complete) {
        return false;
    }
    for (size_t i = 0; i < r->nnodes; i++) {
        if (r->nodes[i]->mapped && r->nodes[i]->state != NODE_UP) {
            return false;
        }
    }
    return true;
}

bool
redis_is_cluster(const struct redis *r)
{
    return r->mode == MODE_CLUSTER;
}

void
redis_check_ready(struct redis *r)
{
    bool ready = redis_ready(r);
    if (ready && !r->was_ready && r->ready_fn && !r->freeing) {
        r->was_ready = true;
        r->ready_fn(r->ready_arg);
    }
    r->was_ready = ready;
}

void
redis_on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct redis *r = arg;
    UNUSED(fd);
    UNUSED(what);
    int64_t now = time_mono_ms();
    for (size_t i = 0; i < r->nnodes; i++) {
        struct rnode *n = r->nodes[i];
        if (n->state == NODE_CONNECTING && now - n->last_io_ms > r->timeout_ms) {
            redis_node_fail(n, "connect timed out");
        } else if (n->sent_head && now - n->sent_head->sent_ms > r->timeout_ms) {
            /* A hung or partitioned server: every command on it is failed now, not when the
             * kernel gives up on the socket minutes later. */
            char why[64];
            snprintf(why, sizeof(why), "no reply in %d ms", r->timeout_ms);
            redis_node_fail(n, why);
        } else if (n->state == NODE_UP && n->sent_head == NULL &&
                   now - n->last_io_ms > PING_IDLE_MS) {
            const char *argv[] = {"PING"};
            redis_node_internal(n, NULL, NULL, 1, argv, NULL);
        }
    }
    struct bcmd **p = &r->retry_head;
    while (*p) {
        struct bcmd *c = *p;
        if (c->retry_at <= now) {
            *p = c->rnext;
            c->rnext = NULL;
            c->retry_at = 0;
            redis_route(c);
        } else {
            p = &c->rnext;
        }
    }
    if (r->mode == MODE_CLUSTER &&
        (now - r->refreshed_ms >= REFRESH_EVERY_MS || (!redis_ready(r) && !r->refreshing))) {
        redis_refresh_map(r, false);
    }
    redis_check_ready(r);
}
