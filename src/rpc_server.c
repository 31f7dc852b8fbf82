/* NestJS-compatible RPC server: pattern routing, request ids, Nest reply shapes. */
#include "rpc_server.h"

#include <arpa/inet.h>
#include <event2/listener.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "core_conf.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"

#define RPC_MAX_DEPTH 64 /* deeper request trees are refused */
#define NEST_NO_HANDLER "There is no matching message handler defined in the remote service."
#define TLS_LOG_EVERY_MS 1000 /* at most one handshake-failure line per listener per second */

struct rpc_peer {
    struct rpc_server *srv;       /* borrowed back-pointer */
    struct conn *conn;            /* owned by the conn layer; NULL once closed */
    struct rpc_call *calls;       /* calls in flight on this peer */
    size_t ncalls;                /* how many */
    bool paused;                  /* at max_inflight: its conn is not read */
    int64_t last_active;          /* monotonic ms of its last frame or finished call */
    struct event *idle;           /* idle check, or NULL without rpc_idle_timeout_ms */
    struct rpc_peer *prev, *next; /* server's peer list */
};

struct rpc_call {
    struct rpc_server *srv;         /* borrowed; NULL once the server is freed (orphan) */
    struct rpc_peer *peer;          /* NULL once the peer is gone */
    const struct rpc_route *route;  /* borrowed static row */
    cJSON *id;                      /* owned copy of the request id; NULL for events */
    char rid[40];                   /* request id for logs */
    int64_t started;                /* monotonic ms */
    struct rpc_call *prev, *next;   /* peer's call list */
    struct rpc_call *sprev, *snext; /* server's list of every call in flight */
};

struct rpc_server {
    struct loop *loop;              /* borrowed */
    struct evconnlistener *lev;     /* owned; NULL after stop_accepting */
    const struct rpc_route *routes; /* borrowed */
    char **route_keys;              /* normalised pattern per route */
    size_t nroutes;
    void *arg; /* handlers' argument */
    struct conn_limits limits;
    int max_conns;
    int nconns;
    size_t inflight;
    struct rpc_peer *peers;  /* live peers */
    struct rpc_call *calls;  /* every call in flight, including orphaned ones */
    struct metrics *metrics; /* borrowed; NULL: no metrics */
    const char *role;        /* label of the series */
    SSL_CTX *tls;            /* owned; NULL: plain TCP */
    int idle_ms;             /* 0: idle conns stay */
    size_t max_inflight;     /* 0: no cap */
    int64_t tls_logged_at;   /* last handshake-failure line (monotonic ms) */
    unsigned tls_unlogged;   /* failures since, not logged */
    bool loopback_only;      /* listen on loopback whatever the address says */
};

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int socklen, void *arg);
static void on_frame(struct conn *conn, cJSON *msg, bool has_nul, void *arg);
static void on_close(struct conn *conn, const char *why, void *arg);
static char *normalise_pattern(const cJSON *pattern);

static const struct conn_handler server_handler = {on_frame, on_close, NULL};

static bool
set(const char *s)
{
    return s != NULL && *s != '\0';
}

bool
rpc_host_is_loopback(const char *host)
{
    char buf[64];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(buf)) {
        memcpy(buf, host + 1, n - 2);
        buf[n - 2] = '\0';
        host = buf;
    }
    struct in_addr v4;
    struct in6_addr v6;
    if (inet_pton(AF_INET, host, &v4) == 1) {
        return (ntohl(v4.s_addr) >> 24) == 127;
    }
    if (inet_pton(AF_INET6, host, &v6) == 1) {
        return IN6_IS_ADDR_LOOPBACK(&v6);
    }
    return strcmp(host, "localhost") == 0;
}

void
rpc_server_opts_from_core(struct rpc_server_opts *o, const struct core_conf *core)
{
    o->max_frame = (size_t)core->max_frame_bytes;
    o->stall_ms = (int)core->frame_stall_ms;
    o->max_conns = (int)core->max_conns;
    o->idle_ms = (int)core->rpc_idle_timeout_ms;
    o->max_inflight = (int)core->rpc_max_inflight;
    o->tls.ca = core->rpc_tls_ca;
    o->tls.cert = core->rpc_tls_cert;
    o->tls.key = core->rpc_tls_key;
    o->insecure = core->rpc_insecure;
}

/* Loads the listener's TLS context (NULL and no error without TLS files), or fails naming the
 * keys; then refuses a non-loopback host without mutual TLS unless insecure. */
static int
listener_tls(const struct tls_files *f, bool insecure, const char *key, const char *listen,
             bool loopback, SSL_CTX **ctx, char *err, size_t errlen)
{
    *ctx = NULL;
    if (set(f->ca) || set(f->cert) || set(f->key)) {
        char why[300];
        if ((*ctx = tls_server_ctx(f, why, sizeof(why))) == NULL) {
            snprintf(err, errlen, "rpc_tls_ca/rpc_tls_cert/rpc_tls_key (for %s): %s", key, why);
            return -1;
        }
    }
    if (!loopback && !insecure && !(set(f->ca) && set(f->cert) && set(f->key))) {
        snprintf(err, errlen,
                 "%s=%s is not a loopback address: the internal links need mutual TLS there "
                 "(set rpc_tls_ca, rpc_tls_cert and rpc_tls_key), or set rpc_insecure=true to "
                 "serve them without",
                 key, listen);
        SSL_CTX_free(*ctx);
        *ctx = NULL;
        return -1;
    }
    return 0;
}

int
rpc_server_check_conf(const struct core_conf *core, const char *key, const char *listen,
                      bool loopback_only, char *err, size_t errlen)
{
    struct rpc_server_opts o = {0};
    rpc_server_opts_from_core(&o, core);
    char *host = NULL;
    int port;
    if (listen == NULL || util_parse_hostport(listen, &host, &port) != 0) {
        snprintf(err, errlen, "%s: cannot parse listen address %s", key, listen ? listen : "");
        return -1;
    }
    bool loopback = loopback_only || rpc_host_is_loopback(host);
    free(host);
    SSL_CTX *ctx;
    if (listener_tls(&o.tls, o.insecure, key, listen, loopback, &ctx, err, errlen) != 0) {
        return -1;
    }
    SSL_CTX_free(ctx);
    return 0;
}

/* Serialises a JSON value with object keys sorted, recursively (Nest's pattern normalisation). */
static void
append_sorted(struct sbuf *b, const cJSON *v)
{
    if (cJSON_IsObject(v)) {
        size_t n = 0;
        for (const cJSON *c = v->child; c; c = c->next) {
            n++;
        }
        const cJSON **kids = xcalloc(n ? n : 1, sizeof(*kids));
        size_t i = 0;
        for (const cJSON *c = v->child; c; c = c->next) {
            kids[i++] = c;
        }
        for (size_t a = 1; a < n; a++) { /* insertion sort: patterns are tiny */
            const cJSON *k = kids[a];
            size_t j = a;
            while (j > 0 && strcmp(kids[j - 1]->string, k->string) > 0) {
                kids[j] = kids[j - 1];
                j--;
            }
            kids[j] = k;
        }
        sbuf_appends(b, "{");
        for (i = 0; i < n; i++) {
            cJSON *key = cJSON_CreateString(kids[i]->string);
            char *ks = cJSON_PrintUnformatted(key);
            sbuf_appendf(b, "%s%s:", i ? "," : "", ks);
            free(ks);
            cJSON_Delete(key);
            append_sorted(b, kids[i]);
        }
        sbuf_appends(b, "}");
        free(kids);
        return;
    }
    char *s = cJSON_PrintUnformatted(v);
    sbuf_appends(b, s);
    free(s);
}

static char *
normalise_pattern(const cJSON *pattern)
{
    struct sbuf b = {0};
    if (cJSON_IsString(pattern)) {
        cJSON *parsed = cJSON_Parse(pattern->valuestring);
        if (parsed != NULL && cJSON_IsObject(parsed)) {
            append_sorted(&b, parsed);
        } else {
            sbuf_appends(&b, pattern->valuestring);
        }
        cJSON_Delete(parsed);
    } else if (cJSON_IsObject(pattern)) {
        append_sorted(&b, pattern);
    } else {
        return NULL;
    }
    return sbuf_steal(&b);
}

static int
listen_on(struct rpc_server *srv, const char *addr, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)&ss, &sslen) != 0) {
        snprintf(err, errlen, "cannot parse listen address %s", addr);
        return -1;
    }
    if (srv->loopback_only) { /* the same port, on loopback */
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)&ss;
            if ((ntohl(in->sin_addr.s_addr) >> 24) != 127) {
                in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                log_warn("rpc_listen_loopback",
                         "addr=%s bound=127.0.0.1:%d note=\"all roles run in this process: the "
                         "internal links stay on loopback\"",
                         addr, ntohs(in->sin_port));
            }
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
            if (!IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) {
                in6->sin6_addr = in6addr_loopback;
                log_warn("rpc_listen_loopback",
                         "addr=%s bound=[::1]:%d note=\"all roles run in this process: the "
                         "internal links stay on loopback\"",
                         addr, ntohs(in6->sin6_port));
            }
        }
    }
    srv->lev = evconnlistener_new_bind(loop_base(srv->loop), on_accept, srv,
                                       LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 512,
                                       (struct sockaddr *)&ss, sslen);
    if (srv->lev == NULL) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return -1;
    }
    return 0;
}

struct rpc_server *
rpc_server_new(struct loop *loop, const struct rpc_server_opts *opts,
               const struct rpc_route *routes, size_t nroutes, void *arg, char *err, size_t errlen)
{
    struct rpc_server *srv = xcalloc(1, sizeof(*srv));
    srv->loop = loop;
    srv->routes = routes;
    srv->nroutes = nroutes;
    srv->arg = arg;
    srv->limits.max_frame = opts->max_frame;
    srv->limits.stall_ms = opts->stall_ms;
    srv->max_conns = opts->max_conns;
    srv->metrics = opts->metrics;
    srv->role = opts->role ? opts->role : "?";
    srv->idle_ms = opts->idle_ms > 0 ? opts->idle_ms : 0;
    srv->max_inflight = opts->max_inflight > 0 ? (size_t)opts->max_inflight : 0;
    srv->loopback_only = opts->loopback_only;
    if (srv->metrics) {
        metrics_describe(srv->metrics, "chanced_rpc_requests_total", METRICS_COUNTER,
                         "RPC calls served, by role, pattern and outcome (ok or an error code).");
        metrics_describe(srv->metrics, "chanced_rpc_request_duration_seconds", METRICS_HISTOGRAM,
                         "Time from request to final reply, by role and pattern.");
        metrics_describe(srv->metrics, "chanced_rpc_tls_handshake_failures_total", METRICS_COUNTER,
                         "TLS handshakes that failed on the internal links (no or a bad "
                         "certificate, not TLS, too slow), by role and side.");
        metrics_describe(srv->metrics, "chanced_rpc_conns_throttled_total", METRICS_COUNTER,
                         "Times an RPC connection reached rpc_max_inflight and was not read "
                         "until a call finished, by role.");
        metrics_describe(srv->metrics, "chanced_rpc_conns_idle_closed_total", METRICS_COUNTER,
                         "RPC connections closed after rpc_idle_timeout_ms without a call, by "
                         "role.");
    }
    char host[300] = "";
    int port;
    char *h = NULL;
    if (util_parse_hostport(opts->listen, &h, &port) == 0) {
        snprintf(host, sizeof(host), "%s", h);
        free(h);
    }
    if (listener_tls(&opts->tls, opts->insecure, "listen", opts->listen,
                     opts->loopback_only || rpc_host_is_loopback(host), &srv->tls, err,
                     errlen) != 0) {
        free(srv);
        return NULL;
    }
    srv->route_keys = xcalloc(nroutes ? nroutes : 1, sizeof(char *));
    for (size_t i = 0; i < nroutes; i++) {
        cJSON *pattern = cJSON_CreateObject();
        cJSON_AddStringToObject(pattern, "cmd", routes[i].cmd);
        srv->route_keys[i] = normalise_pattern(pattern);
        cJSON_Delete(pattern);
    }
    if (listen_on(srv, opts->listen, err, errlen) != 0) {
        rpc_server_free(srv);
        return NULL;
    }
    log_info("rpc_listening", "addr=%s routes=%zu tls=%s", opts->listen, nroutes,
             srv->tls == NULL    ? "off"
             : set(opts->tls.ca) ? "mutual"
                                 : "server_only");
    return srv;
}

void
rpc_server_stop_accepting(struct rpc_server *srv)
{
    if (srv->lev) {
        evconnlistener_free(srv->lev);
        srv->lev = NULL;
    }
}

void
rpc_server_free(struct rpc_server *srv)
{
    if (srv == NULL) {
        return;
    }
    rpc_server_stop_accepting(srv);
    while (srv->peers) {
        conn_close(srv->peers->conn, "server shutting down"); /* unlinks via on_close */
    }
    /* Calls a handler still holds become orphans: finishing them later just frees them. */
    for (struct rpc_call *c = srv->calls; c; c = c->snext) {
        c->srv = NULL;
    }
    for (size_t i = 0; i < srv->nroutes; i++) {
        free(srv->route_keys[i]);
    }
    free(srv->route_keys);
    SSL_CTX_free(srv->tls); /* conns closing still hold their own references */
    free(srv);
}

size_t
rpc_server_inflight(const struct rpc_server *srv)
{
    return srv->inflight;
}

size_t
rpc_server_pending_output(const struct rpc_server *srv)
{
    size_t n = 0;
    for (const struct rpc_peer *p = srv->peers; p; p = p->next) {
        n += conn_pending_output(p->conn);
    }
    return n;
}

static void
count(struct rpc_server *srv, const char *name, const char *extra)
{
    if (srv->metrics) {
        char labels[128];
        snprintf(labels, sizeof(labels), "role=\"%s\"%s", srv->role, extra);
        metrics_add(srv->metrics, name, labels, 1);
    }
}

/* The peer's idle check: closes it once it has had no call in flight and sent no frame for
 * idle_ms; otherwise looks again when that could next be true. */
static void
on_idle(evutil_socket_t fd, short what, void *arg)
{
    struct rpc_peer *peer = arg;
    struct rpc_server *srv = peer->srv;
    UNUSED(fd);
    UNUSED(what);
    int64_t left = srv->idle_ms;
    if (peer->ncalls == 0) {
        left = peer->last_active + srv->idle_ms - time_mono_ms();
        if (left <= 0) {
            log_info("rpc_conn_idle", "conn=%llu peer=%s idle_ms=%d",
                     (unsigned long long)conn_id(peer->conn), conn_peer(peer->conn), srv->idle_ms);
            count(srv, "chanced_rpc_conns_idle_closed_total", "");
            conn_close(peer->conn, "idle"); /* frees peer (on_close) */
            return;
        }
    }
    struct timeval tv = {(time_t)(left / 1000), (suseconds_t)((left % 1000) * 1000)};
    event_add(peer->idle, &tv);
}

static void
on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int socklen,
          void *arg)
{
    struct rpc_server *srv = arg;
    UNUSED(lev);
    UNUSED(socklen);
    if (srv->max_conns > 0 && srv->nconns >= srv->max_conns) {
        log_warn("rpc_conn_refused", "reason=max_conns limit=%d", srv->max_conns);
        evutil_closesocket(fd);
        return;
    }
    struct rpc_peer *peer = xcalloc(1, sizeof(*peer));
    peer->srv = srv;
    peer->conn = conn_accept(srv->loop, fd, sa, &srv->limits, srv->tls, &server_handler, peer);
    if (peer->conn == NULL) {
        free(peer);
        return;
    }
    peer->last_active = time_mono_ms();
    if (srv->idle_ms > 0) {
        peer->idle = event_new(loop_base(srv->loop), -1, 0, on_idle, peer);
        struct timeval tv = {srv->idle_ms / 1000, (srv->idle_ms % 1000) * 1000};
        event_add(peer->idle, &tv);
    }
    peer->next = srv->peers;
    if (srv->peers) {
        srv->peers->prev = peer;
    }
    srv->peers = peer;
    srv->nconns++;
    log_debug("rpc_conn_open", "conn=%llu peer=%s", (unsigned long long)conn_id(peer->conn),
              conn_peer(peer->conn));
}

static void
on_close(struct conn *conn, const char *why, void *arg)
{
    struct rpc_peer *peer = arg;
    struct rpc_server *srv = peer->srv;
    log_debug("rpc_conn_closed", "conn=%llu peer=%s reason=\"%s\"",
              (unsigned long long)conn_id(conn), conn_peer(conn), why);
    if (conn_tls_failed(conn)) {
        count(srv, "chanced_rpc_tls_handshake_failures_total", ",side=\"server\"");
        /* A stranger can fail handshakes as fast as it connects: one line a second at most. */
        int64_t now = time_mono_ms();
        if (now - srv->tls_logged_at >= TLS_LOG_EVERY_MS) {
            log_warn("rpc_tls_handshake_failed",
                     "role=%s side=server peer=%s reason=\"%s\" not_logged_since=%u", srv->role,
                     conn_peer(conn), why, srv->tls_unlogged);
            srv->tls_logged_at = now;
            srv->tls_unlogged = 0;
        } else {
            srv->tls_unlogged++;
        }
    }
    if (peer->idle) {
        event_free(peer->idle);
    }
    for (struct rpc_call *c = peer->calls; c; c = c->next) {
        c->peer = NULL; /* handlers still finish them; replies are dropped */
    }
    if (peer->prev) {
        peer->prev->next = peer->next;
    } else {
        srv->peers = peer->next;
    }
    if (peer->next) {
        peer->next->prev = peer->prev;
    }
    srv->nconns--;
    free(peer);
}

static void
send_frame(struct rpc_call *call, cJSON *msg)
{
    if (call->peer != NULL && call->id != NULL && !conn_is_closing(call->peer->conn)) {
        if (conn_send(call->peer->conn, msg) != 0) {
            log_warn("rpc_send_failed", "conn=%llu", (unsigned long long)conn_id(call->peer->conn));
        }
    }
    cJSON_Delete(msg);
}

static void
call_finish(struct rpc_call *call, const char *outcome)
{
    struct rpc_server *srv = call->srv;
    if (srv == NULL) {
        cJSON_Delete(call->id);
        free(call);
        return;
    }
    if (call->sprev) {
        call->sprev->snext = call->snext;
    } else {
        srv->calls = call->snext;
    }
    if (call->snext) {
        call->snext->sprev = call->sprev;
    }
    struct rpc_peer *peer = call->peer;
    if (peer) {
        if (call->prev) {
            call->prev->next = call->next;
        } else {
            peer->calls = call->next;
        }
        if (call->next) {
            call->next->prev = call->prev;
        }
        peer->ncalls--;
        peer->last_active = time_mono_ms();
        if (peer->paused && peer->ncalls < srv->max_inflight) {
            peer->paused = false;
            conn_resume(peer->conn);
        }
    }
    if (srv->metrics && call->route) {
        char labels[200];
        snprintf(labels, sizeof(labels), "role=\"%s\",cmd=\"%s\",outcome=\"%.40s\"", srv->role,
                 call->route->cmd, outcome);
        metrics_add(srv->metrics, "chanced_rpc_requests_total", labels, 1);
        snprintf(labels, sizeof(labels), "role=\"%s\",cmd=\"%s\"", srv->role, call->route->cmd);
        metrics_observe(srv->metrics, "chanced_rpc_request_duration_seconds", labels,
                        (double)(time_mono_ms() - call->started) / 1000.0);
    }
    srv->inflight--;
    cJSON_Delete(call->id);
    free(call);
}

void
rpc_reply(struct rpc_call *call, cJSON *response)
{
    cJSON *msg = cJSON_CreateObject();
    if (response) { /* Nest ends a void reply or a finished stream without "response" */
        cJSON_AddItemToObject(msg, "response", response);
    }
    cJSON_AddTrueToObject(msg, "isDisposed");
    if (call->id) {
        cJSON_AddItemToObject(msg, "id", cJSON_Duplicate(call->id, 1));
    }
    send_frame(call, msg);
    call_finish(call, "ok");
}

void
rpc_reply_partial(struct rpc_call *call, cJSON *response)
{
    cJSON *msg = cJSON_CreateObject();
    cJSON_AddItemToObject(msg, "response", response ? response : cJSON_CreateNull());
    if (call->id) {
        cJSON_AddItemToObject(msg, "id", cJSON_Duplicate(call->id, 1));
    }
    send_frame(call, msg);
}

void
rpc_reply_error(struct rpc_call *call, const char *code, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    cJSON *err = cJSON_CreateObject();
    cJSON_AddStringToObject(err, "status", "error");
    cJSON_AddStringToObject(err, "code", code);
    cJSON_AddStringToObject(err, "message", text);
    cJSON *msg = cJSON_CreateObject();
    cJSON_AddItemToObject(msg, "err", err);
    cJSON_AddTrueToObject(msg, "isDisposed");
    if (call->id) {
        cJSON_AddItemToObject(msg, "id", cJSON_Duplicate(call->id, 1));
    }
    log_debug("rpc_error_reply", "cmd=%s code=%s", call->route ? call->route->cmd : "-", code);
    send_frame(call, msg);
    call_finish(call, code);
}

const char *
rpc_call_cmd(const struct rpc_call *call)
{
    return call->route ? call->route->cmd : "";
}

const char *
rpc_call_request_id(const struct rpc_call *call)
{
    return call->rid;
}

bool
rpc_call_abandoned(const struct rpc_call *call)
{
    return call->peer == NULL;
}

static bool
valid_rid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 36) {
        return false;
    }
    for (; *s; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_')) {
            return false;
        }
    }
    return true;
}

static struct rpc_call *
call_new(struct rpc_peer *peer, const struct rpc_route *route, const cJSON *id, cJSON *data)
{
    struct rpc_call *call = xcalloc(1, sizeof(*call));
    call->srv = peer->srv;
    call->peer = peer;
    call->route = route;
    call->id = id ? cJSON_Duplicate(id, 1) : NULL;
    call->started = time_mono_ms();
    cJSON *rid = cJSON_IsObject(data) ? cJSON_DetachItemFromObject(data, "_rid") : NULL;
    if (rid && cJSON_IsString(rid) && valid_rid(rid->valuestring)) {
        snprintf(call->rid, sizeof(call->rid), "%s", rid->valuestring);
    } else {
        util_random_hex(call->rid, 8);
    }
    cJSON_Delete(rid);
    call->next = peer->calls;
    if (peer->calls) {
        peer->calls->prev = call;
    }
    peer->calls = call;
    peer->ncalls++;
    call->snext = peer->srv->calls;
    if (peer->srv->calls) {
        peer->srv->calls->sprev = call;
    }
    peer->srv->calls = call;
    peer->srv->inflight++;
    return call;
}

static void
reply_no_handler(struct rpc_peer *peer, const cJSON *id)
{
    cJSON *msg = cJSON_CreateObject();
    cJSON_AddItemToObject(msg, "id", cJSON_Duplicate(id, 1));
    cJSON_AddStringToObject(msg, "status", "error");
    cJSON_AddStringToObject(msg, "err", NEST_NO_HANDLER);
    if (conn_send(peer->conn, msg) != 0) {
        log_debug("rpc_send_failed", "conn=%llu", (unsigned long long)conn_id(peer->conn));
    }
    cJSON_Delete(msg);
}

static void
on_frame(struct conn *conn, cJSON *msg, bool has_nul, void *arg)
{
    struct rpc_peer *peer = arg;
    struct rpc_server *srv = peer->srv;

    peer->last_active = time_mono_ms();
    if (!cJSON_IsObject(msg)) {
        log_warn("rpc_bad_message", "conn=%llu reason=not_an_object",
                 (unsigned long long)conn_id(conn));
        conn_close(conn, "message is not an object");
        return;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(msg, "id");
    const cJSON *pattern = cJSON_GetObjectItemCaseSensitive(msg, "pattern");
    cJSON *data = cJSON_GetObjectItemCaseSensitive(msg, "data");
    char *key = pattern ? normalise_pattern(pattern) : NULL;
    const struct rpc_route *route = NULL;
    for (size_t i = 0; key && i < srv->nroutes; i++) {
        if (strcmp(key, srv->route_keys[i]) == 0 || strcmp(key, srv->routes[i].cmd) == 0) {
            route = &srv->routes[i];
        }
    }
    if (route != NULL && id == NULL && !route->events) {
        /* An event (no id): a NestJS server runs only event handlers for it, and every route
         * here is a request handler, so it runs nothing. (Acting on it would change state
         * with nobody told the outcome.) */
        log_warn("rpc_event_ignored",
                 "conn=%llu cmd=%s note=\"events run no request handler; "
                 "send a request\"",
                 (unsigned long long)conn_id(conn), route->cmd);
        free(key);
        return;
    }
    if (route == NULL) {
        log_debug("rpc_no_handler", "conn=%llu pattern=%.80s", (unsigned long long)conn_id(conn),
                  key ? key : "(none)");
        free(key);
        if (id != NULL) {
            reply_no_handler(peer, id);
        }
        return;
    }
    free(key);

    struct rpc_call *call = call_new(peer, route, id, data);
    if (srv->max_inflight > 0 && peer->ncalls >= srv->max_inflight && !peer->paused) {
        /* Read later: the peer's next requests wait unread until one of these finishes. */
        peer->paused = true;
        conn_pause(conn);
        count(srv, "chanced_rpc_conns_throttled_total", "");
        log_debug("rpc_conn_throttled", "conn=%llu peer=%s inflight=%zu",
                  (unsigned long long)conn_id(conn), conn_peer(conn), peer->ncalls);
    }
    log_set_request_id(call->rid);
    if (has_nul) {
        rpc_reply_error(call, "bad_request", "NUL characters are not allowed in strings");
    } else if (json_has_duplicate_keys(msg)) {
        rpc_reply_error(call, "bad_request", "duplicate keys in request");
    } else if (json_depth(msg) > RPC_MAX_DEPTH) {
        rpc_reply_error(call, "bad_request", "request nested too deeply");
    } else {
        route->fn(call, data, srv->arg);
    }
    log_set_request_id(NULL);
}
