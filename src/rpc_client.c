/* NestJS-compatible RPC client: multiplexed calls by id, deadlines, reconnect with backoff. */
#include "rpc_client.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "core_conf.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "rpc_server.h"

#define RPC_BUCKETS 1024        /* pending-call hash buckets */
#define RPC_BACKOFF_MIN_MS 100  /* first reconnect delay */
#define RPC_BACKOFF_MAX_MS 5000 /* reconnect delay cap */
#define RPC_LIVED_MS 1000    /* a conn up this long that the server closes is redialled at once */
#define RPC_RESOLVE_MS 5000  /* names in the address list are resolved again this often */
#define RPC_MAX_PEERS 64     /* addresses one client dials at most */
#define RPC_MAX_ENDPOINTS 16 /* entries of the address list */
#define RPC_MAX_PER_NAME 16  /* addresses taken from one name */

struct peer;

struct pending {
    uint64_t id;                 /* numeric request id, echoed by the server */
    rpc_reply_fn fn;             /* caller's callback */
    void *arg;                   /* its argument */
    struct event *timer;         /* deadline */
    struct rpc_client *cli;      /* borrowed back-pointer */
    struct peer *peer;           /* where it was sent, or NULL while unsent */
    cJSON *unsent;               /* frame waiting for a connect, or NULL once sent */
    struct pending *next, *prev; /* bucket chain */
};

/* One address of the list (a name may resolve to several: each is a peer of its own). */
struct endpoint {
    char *host; /* as configured: an IP literal or a name (the TLS name to check) */
    int port;
    bool name; /* not an IP literal: resolved again every RPC_RESOLVE_MS */
};

/* One connection to one address. */
struct peer {
    struct rpc_client *cli;
    const struct endpoint *ep;  /* borrowed from cli->eps */
    struct sockaddr_storage ss; /* the address dialled */
    socklen_t sslen;
    struct conn *conn;   /* current conn or NULL */
    bool connected;      /* conn finished connecting (and its TLS handshake) */
    bool gone;           /* the name no longer resolves to it: closed once idle */
    int64_t up_since;    /* monotonic ms when the current conn became usable */
    int backoff_ms;      /* next reconnect delay */
    struct event *retry; /* reconnect timer */
    size_t inflight;     /* calls sent on it and not finished */
};

struct rpc_client {
    struct loop *loop; /* borrowed */
    char *addr;        /* owned: the configured list, for messages */
    struct endpoint *eps;
    int neps;
    struct peer *peers[RPC_MAX_PEERS];
    int npeers;
    unsigned rr; /* round-robin position over the peers */
    struct conn_limits limits;
    SSL_CTX *tls;            /* owned; NULL: plain TCP */
    struct metrics *metrics; /* borrowed, or NULL */
    const char *role;        /* metrics label */
    struct event *resolve;   /* re-resolution timer (names only) */
    struct resolution *res;  /* the lookup under way, or NULL */
    pthread_t resolver;      /* its thread (joined when done or at free) */
    uint64_t next_id;
    struct pending *buckets[RPC_BUCKETS];
    size_t npending;
};

static void on_frame(struct conn *conn, cJSON *msg, bool has_nul, void *arg);
static void on_close(struct conn *conn, const char *why, void *arg);
static void on_connect(struct conn *conn, void *arg);
static void start_connect(struct peer *peer);

static const struct conn_handler client_handler = {on_frame, on_close, on_connect};

const char *
rpc_client_status_name(int status)
{
    static const char *names[] = {"ok", "partial", "error", "timeout", "lost", "unavailable"};
    return status >= 0 && status < (int)ARRAY_SIZE(names) ? names[status] : "?";
}

const char *
rpc_client_err_code(const cJSON *err)
{
    const char *code = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(err, "code"));
    return code ? code : "";
}

static void
pending_unlink(struct rpc_client *cli, struct pending *p)
{
    struct pending **head = &cli->buckets[p->id % RPC_BUCKETS];
    if (p->prev) {
        p->prev->next = p->next;
    } else {
        *head = p->next;
    }
    if (p->next) {
        p->next->prev = p->prev;
    }
    cli->npending--;
    if (p->peer) {
        p->peer->inflight--;
    }
}

static struct pending *
pending_find(struct rpc_client *cli, uint64_t id)
{
    for (struct pending *p = cli->buckets[id % RPC_BUCKETS]; p; p = p->next) {
        if (p->id == id) {
            return p;
        }
    }
    return NULL;
}

/* Finishes a call: unlinks, frees, then calls back (the callback may issue new calls). */
static void
pending_finish(struct rpc_client *cli, struct pending *p, int status, const cJSON *result)
{
    pending_unlink(cli, p);
    rpc_reply_fn fn = p->fn;
    void *arg = p->arg;
    event_free(p->timer);
    cJSON_Delete(p->unsent);
    free(p);
    fn(status, result, arg);
}

/*
 * Fails the calls sent on peer (RPC_LOST: the outcome is unknown) and, with unsent, the calls
 * waiting for a connect (RPC_UNAVAILABLE: nothing happened). peer NULL: every sent call.
 */
static void
fail_calls(struct rpc_client *cli, const struct peer *peer, bool unsent)
{
    uint64_t upto = cli->next_id; /* calls a callback makes meanwhile are not ours to fail */
    for (size_t b = 0; b < RPC_BUCKETS; b++) {
        struct pending *p = cli->buckets[b];
        while (p) {
            struct pending *next = p->next;
            if (p->id < upto && (p->unsent ? unsent : (peer == NULL || p->peer == peer))) {
                pending_finish(cli, p, p->unsent ? RPC_UNAVAILABLE : RPC_LOST, NULL);
                next = cli->buckets[b]; /* the callback may have changed the chain */
            }
            p = next;
        }
    }
}

static bool
any_peer(const struct rpc_client *cli, bool connecting_counts)
{
    for (int i = 0; i < cli->npeers; i++) {
        const struct peer *pe = cli->peers[i];
        if (!pe->gone && (pe->connected || (connecting_counts && pe->conn))) {
            return true;
        }
    }
    return false;
}

/* The next usable peer, round-robin: calls spread over every connected address. */
static struct peer *
pick(struct rpc_client *cli)
{
    for (int k = 0; k < cli->npeers; k++) {
        struct peer *pe = cli->peers[(cli->rr + (unsigned)k) % (unsigned)cli->npeers];
        if (pe->connected && !pe->gone && pe->conn) {
            cli->rr = (cli->rr + (unsigned)k + 1) % (unsigned)cli->npeers;
            return pe;
        }
    }
    return NULL;
}

static void
on_retry(evutil_socket_t fd, short what, void *arg)
{
    UNUSED(fd);
    UNUSED(what);
    start_connect(arg);
}

static void
schedule_retry(struct peer *pe)
{
    struct timeval tv = {pe->backoff_ms / 1000, (pe->backoff_ms % 1000) * 1000};
    event_add(pe->retry, &tv);
    pe->backoff_ms =
        pe->backoff_ms * 2 > RPC_BACKOFF_MAX_MS ? RPC_BACKOFF_MAX_MS : pe->backoff_ms * 2;
}

static void
start_connect(struct peer *pe)
{
    struct rpc_client *cli = pe->cli;
    pe->conn = conn_connect_addr(cli->loop, pe->ep->host, &pe->ss, pe->sslen, &cli->limits,
                                 cli->tls, &client_handler, pe);
    if (pe->conn == NULL) {
        schedule_retry(pe);
    }
}

static void
peer_free(struct peer *pe)
{
    event_free(pe->retry);
    pe->retry = NULL;
    if (pe->conn) {
        struct conn *c = pe->conn;
        pe->conn = NULL;
        conn_close(c, "client freed");
    }
    free(pe);
}

static void
peer_add(struct rpc_client *cli, const struct endpoint *ep, const struct sockaddr_storage *ss,
         socklen_t len)
{
    if (cli->npeers == RPC_MAX_PEERS) {
        log_warn("rpc_too_many_peers", "addr=%s max=%d", cli->addr, RPC_MAX_PEERS);
        return;
    }
    struct peer *pe = xcalloc(1, sizeof(*pe));
    pe->cli = cli;
    pe->ep = ep;
    memcpy(&pe->ss, ss, len);
    pe->sslen = len;
    pe->backoff_ms = RPC_BACKOFF_MIN_MS;
    pe->retry = event_new(loop_base(cli->loop), -1, 0, on_retry, pe);
    cli->peers[cli->npeers++] = pe;
    start_connect(pe);
}

/* Drops peers marked gone that have nothing in flight. */
static void
reap_gone(struct rpc_client *cli)
{
    for (int i = 0; i < cli->npeers;) {
        struct peer *pe = cli->peers[i];
        if (pe->gone && pe->inflight == 0) {
            log_info("rpc_peer_removed", "addr=%s reason=\"no longer in DNS\"", cli->addr);
            cli->peers[i] = cli->peers[--cli->npeers];
            peer_free(pe);
        } else {
            i++;
        }
    }
    cli->rr = 0;
}

/* ---- names resolved off the loop ---- */

/* A lookup of every name of the list, on a thread of its own; the loop polls done. */
struct resolution {
    int neps;
    char *hosts[RPC_MAX_ENDPOINTS]; /* copies: the thread never touches the client */
    int ports[RPC_MAX_ENDPOINTS];
    bool names[RPC_MAX_ENDPOINTS];
    int n[RPC_MAX_ENDPOINTS]; /* addresses found per endpoint */
    struct sockaddr_storage addrs[RPC_MAX_ENDPOINTS][RPC_MAX_PER_NAME];
    socklen_t lens[RPC_MAX_ENDPOINTS][RPC_MAX_PER_NAME];
    int done; /* atomic: the thread finished */
};

static void
resolution_free(struct resolution *r)
{
    for (int e = 0; e < r->neps; e++) {
        free(r->hosts[e]);
    }
    free(r);
}

static bool
same_addr(const struct peer *pe, const struct sockaddr_storage *ss, socklen_t len)
{
    return pe->sslen == len && memcmp(&pe->ss, ss, len) == 0;
}

/* On the loop: peers for new addresses, gone for vanished ones (a failed lookup keeps all). */
static void
apply_resolution(struct rpc_client *cli, const struct resolution *r)
{
    for (int e = 0; e < cli->neps; e++) {
        if (!cli->eps[e].name || r->n[e] == 0) {
            continue;
        }
        for (int i = 0; i < cli->npeers; i++) {
            struct peer *pe = cli->peers[i];
            if (pe->ep != &cli->eps[e]) {
                continue;
            }
            bool still = false;
            for (int k = 0; k < r->n[e] && !still; k++) {
                still = same_addr(pe, &r->addrs[e][k], r->lens[e][k]);
            }
            pe->gone = !still;
        }
        for (int k = 0; k < r->n[e]; k++) {
            bool known = false;
            for (int i = 0; i < cli->npeers && !known; i++) {
                known = cli->peers[i]->ep == &cli->eps[e] &&
                        same_addr(cli->peers[i], &r->addrs[e][k], r->lens[e][k]);
            }
            if (!known) {
                log_info("rpc_peer_added", "addr=%s host=%s", cli->addr, cli->eps[e].host);
                peer_add(cli, &cli->eps[e], &r->addrs[e][k], r->lens[e][k]);
            }
        }
    }
    reap_gone(cli);
}

static void *
resolver(void *arg)
{
    struct resolution *r = arg;
    for (int e = 0; e < r->neps; e++) {
        if (r->names[e]) {
            r->n[e] = util_resolve_all(r->hosts[e], r->ports[e], r->addrs[e], r->lens[e],
                                       RPC_MAX_PER_NAME);
        }
    }
    __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Collects a finished lookup, or starts the next one; polls quickly while one is out. */
static void
on_resolve_timer(evutil_socket_t fd, short what, void *arg)
{
    struct rpc_client *cli = arg;
    UNUSED(fd);
    UNUSED(what);
    int next_ms = RPC_RESOLVE_MS;
    if (cli->res && __atomic_load_n(&cli->res->done, __ATOMIC_ACQUIRE)) {
        pthread_join(cli->resolver, NULL);
        apply_resolution(cli, cli->res);
        resolution_free(cli->res);
        cli->res = NULL;
    } else if (cli->res) {
        next_ms = 100;
    } else {
        struct resolution *r = xcalloc(1, sizeof(*r));
        r->neps = cli->neps;
        for (int e = 0; e < cli->neps; e++) {
            r->hosts[e] = xstrdup(cli->eps[e].host);
            r->ports[e] = cli->eps[e].port;
            r->names[e] = cli->eps[e].name;
        }
        if (pthread_create(&cli->resolver, NULL, resolver, r) == 0) {
            cli->res = r;
            next_ms = 100;
        } else {
            resolution_free(r);
        }
    }
    struct timeval tv = {next_ms / 1000, (next_ms % 1000) * 1000};
    event_add(cli->resolve, &tv);
}

static bool
set(const char *s)
{
    return s != NULL && *s != '\0';
}

void
rpc_client_opts_from_core(struct rpc_client_opts *o, const struct core_conf *core)
{
    o->max_frame = (size_t)core->max_frame_bytes;
    o->tls.ca = core->rpc_tls_ca;
    o->tls.cert = core->rpc_tls_cert;
    o->tls.key = core->rpc_tls_key;
}

/* The client's TLS context: NULL (and no error) without a CA. */
static int
client_tls(const struct tls_files *f, const char *key, SSL_CTX **ctx, char *err, size_t errlen)
{
    *ctx = NULL;
    if (!set(f->ca)) {
        if (set(f->cert) || set(f->key)) {
            snprintf(err, errlen,
                     "rpc_tls_cert/rpc_tls_key are set but rpc_tls_ca is not: %s would be called "
                     "without TLS (set rpc_tls_ca, the CA its certificate is signed by)",
                     key);
            return -1;
        }
        return 0;
    }
    char why[300];
    if ((*ctx = tls_client_ctx(f, why, sizeof(why))) == NULL) {
        snprintf(err, errlen, "rpc_tls_ca/rpc_tls_cert/rpc_tls_key (for %s): %s", key, why);
        return -1;
    }
    return 0;
}

/* Splits "a:1,b:2" into endpoints; -1 with err on a bad entry or too many. */
static int
parse_list(const char *addr, struct endpoint **eps, int *neps, char *err, size_t errlen)
{
    *eps = NULL;
    *neps = 0;
    char *copy = xstrdup(addr), *save = NULL;
    int rc = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok && rc == 0; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') {
            tok++;
        }
        struct endpoint ep = {0};
        if (*neps == RPC_MAX_ENDPOINTS) {
            snprintf(err, errlen, "more than %d addresses in %s", RPC_MAX_ENDPOINTS, addr);
            rc = -1;
        } else if (util_parse_hostport(tok, &ep.host, &ep.port) != 0) {
            snprintf(err, errlen, "cannot parse address '%s' of %s", tok, addr);
            rc = -1;
        } else {
            struct sockaddr_storage ss;
            int len = sizeof(ss);
            char spec[300];
            snprintf(spec, sizeof(spec), strchr(ep.host, ':') ? "[%s]:%d" : "%s:%d", ep.host,
                     ep.port);
            ep.name = evutil_parse_sockaddr_port(spec, (struct sockaddr *)&ss, &len) != 0;
            *eps = xrealloc(*eps, (size_t)(*neps + 1) * sizeof(**eps));
            (*eps)[(*neps)++] = ep;
        }
    }
    if (rc == 0 && *neps == 0) {
        snprintf(err, errlen, "no address in '%s'", addr);
        rc = -1;
    }
    free(copy);
    return rc;
}

static void
free_list(struct endpoint *eps, int n)
{
    for (int i = 0; i < n; i++) {
        free(eps[i].host);
    }
    free(eps);
}

int
rpc_client_check_conf(const struct core_conf *core, const char *key, const char *addr, char *err,
                      size_t errlen)
{
    struct rpc_client_opts o = {0};
    rpc_client_opts_from_core(&o, core);
    struct endpoint *eps = NULL;
    int neps = 0;
    if (addr == NULL || parse_list(addr, &eps, &neps, err, errlen) != 0) {
        if (addr == NULL) {
            snprintf(err, errlen, "%s: no address", key);
        } else {
            size_t n = strlen(err);
            snprintf(err + n, errlen - n, " (%s)", key);
        }
        return -1;
    }
    bool loopback = true;
    for (int i = 0; i < neps; i++) {
        loopback = loopback && rpc_host_is_loopback(eps[i].host);
    }
    free_list(eps, neps);
    SSL_CTX *ctx;
    if (client_tls(&o.tls, key, &ctx, err, errlen) != 0) {
        return -1;
    }
    SSL_CTX_free(ctx);
    if (!loopback && !core->rpc_insecure && !(set(o.tls.ca) && set(o.tls.cert) && set(o.tls.key))) {
        snprintf(err, errlen,
                 "%s=%s is not a loopback address: the internal links need mutual TLS there "
                 "(set rpc_tls_ca, rpc_tls_cert and rpc_tls_key), or set rpc_insecure=true to "
                 "call it without",
                 key, addr);
        return -1;
    }
    return 0;
}

struct rpc_client *
rpc_client_new(struct loop *loop, const char *addr, const struct rpc_client_opts *opts, char *err,
               size_t errlen)
{
    struct rpc_client *cli = xcalloc(1, sizeof(*cli));
    if (parse_list(addr, &cli->eps, &cli->neps, err, errlen) != 0 ||
        client_tls(&opts->tls, addr, &cli->tls, err, errlen) != 0) {
        free_list(cli->eps, cli->neps);
        free(cli);
        return NULL;
    }
    cli->addr = xstrdup(addr);
    cli->metrics = opts->metrics;
    cli->role = opts->role ? opts->role : "?";
    if (cli->metrics) {
        metrics_describe(cli->metrics, "chanced_rpc_tls_handshake_failures_total", METRICS_COUNTER,
                         "TLS handshakes that failed on the internal links (no or a bad "
                         "certificate, not TLS, too slow), by role and side.");
    }
    cli->loop = loop;
    cli->limits.max_frame = opts->max_frame;
    cli->limits.stall_ms = 30000;
    cli->next_id = 1;
    /* Every address of every entry is a peer: names resolve now (at start, blocking is fine)
     * and again every RPC_RESOLVE_MS off the loop, so instances that come and go are found. */
    bool names = false;
    for (int e = 0; e < cli->neps; e++) {
        struct sockaddr_storage ss[RPC_MAX_PER_NAME];
        socklen_t lens[RPC_MAX_PER_NAME];
        int n = util_resolve_all(cli->eps[e].host, cli->eps[e].port, ss, lens, RPC_MAX_PER_NAME);
        if (n == 0) {
            log_warn("resolve_failed", "host=%s note=\"tried again every %d ms\"", cli->eps[e].host,
                     RPC_RESOLVE_MS);
        }
        for (int k = 0; k < n; k++) {
            peer_add(cli, &cli->eps[e], &ss[k], lens[k]);
        }
        names = names || cli->eps[e].name;
    }
    cli->resolve = event_new(loop_base(loop), -1, 0, on_resolve_timer, cli);
    if (names) {
        struct timeval tv = {RPC_RESOLVE_MS / 1000, (RPC_RESOLVE_MS % 1000) * 1000};
        event_add(cli->resolve, &tv);
    }
    return cli;
}

void
rpc_client_free(struct rpc_client *cli)
{
    if (cli == NULL) {
        return;
    }
    if (cli->resolve) {
        event_free(cli->resolve);
        cli->resolve = NULL;
    }
    for (int i = 0; i < cli->npeers; i++) {
        event_free(cli->peers[i]->retry);
        cli->peers[i]->retry = NULL; /* on_close: being freed */
    }
    for (int i = 0; i < cli->npeers; i++) {
        struct peer *pe = cli->peers[i];
        if (pe->conn) {
            struct conn *c = pe->conn;
            pe->conn = NULL;
            conn_close(c, "client freed");
        }
    }
    fail_calls(cli, NULL, true);
    if (cli->res) {
        pthread_join(cli->resolver, NULL); /* a lookup: bounded by the resolver's timeouts */
        resolution_free(cli->res);
    }
    for (int i = 0; i < cli->npeers; i++) {
        free(cli->peers[i]);
    }
    SSL_CTX_free(cli->tls);
    free_list(cli->eps, cli->neps);
    free(cli->addr);
    free(cli);
}

bool
rpc_client_connected(const struct rpc_client *cli)
{
    return any_peer(cli, false);
}

/* Sends the calls waiting for a connect on pe. */
static void
flush_unsent(struct rpc_client *cli, struct peer *pe)
{
    for (size_t b = 0; b < RPC_BUCKETS; b++) {
        for (struct pending *p = cli->buckets[b]; p; p = p->next) {
            /* a JSON null marks a call that is failing as never sent: it is not a frame */
            if (p->unsent && !cJSON_IsNull(p->unsent)) {
                if (conn_send(pe->conn, p->unsent) != 0) {
                    return;
                }
                cJSON_Delete(p->unsent);
                p->unsent = NULL;
                p->peer = pe;
                pe->inflight++;
            }
        }
    }
}

static void
on_connect(struct conn *conn, void *arg)
{
    struct peer *pe = arg;
    struct rpc_client *cli = pe->cli;
    pe->connected = true;
    pe->up_since = time_mono_ms();
    pe->backoff_ms = RPC_BACKOFF_MIN_MS;
    log_info("rpc_connected", "peer=%s tls=%s", conn_peer(conn), cli->tls ? "on" : "off");
    flush_unsent(cli, pe);
}

static void
on_close(struct conn *conn, const char *why, void *arg)
{
    struct peer *pe = arg;
    struct rpc_client *cli = pe->cli;
    bool was_up = pe->connected;
    if (conn_tls_failed(conn)) {
        /* Bounded by the reconnect backoff: at most one line every 5 s per peer. */
        log_warn("rpc_tls_handshake_failed", "side=client peer=%s reason=\"%s\"", conn_peer(conn),
                 why);
        if (cli->metrics) {
            char labels[64];
            snprintf(labels, sizeof(labels), "role=\"%s\",side=\"client\"", cli->role);
            metrics_add(cli->metrics, "chanced_rpc_tls_handshake_failures_total", labels, 1);
        }
    } else if (was_up) {
        log_warn("rpc_disconnected", "peer=%s reason=\"%s\"", conn_peer(conn), why);
    } else {
        log_debug("rpc_connect_failed", "peer=%s reason=\"%s\"", conn_peer(conn), why);
    }
    pe->connected = false;
    pe->conn = NULL;
    if (pe->retry == NULL) {
        return; /* being freed */
    }
    /* What was sent on it has an unknown outcome; what waits for a connect fails at once
     * unless another peer may still take it. */
    fail_calls(cli, pe, !any_peer(cli, true));
    if (pe->gone) {
        reap_gone(cli);
    } else if (was_up && time_mono_ms() - pe->up_since >= RPC_LIVED_MS) {
        /* A conn that served a while and was closed (the server's idle timeout, a restart):
         * dial again now, so the next call finds a conn under way rather than none. */
        start_connect(pe);
    } else {
        schedule_retry(pe);
    }
}

static void
on_frame(struct conn *conn, cJSON *msg, bool has_nul, void *arg)
{
    struct peer *pe = arg;
    struct rpc_client *cli = pe->cli;
    UNUSED(has_nul); /* replies come from our own services; a truncated string is harmless */
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(msg, "id");
    if (!cJSON_IsNumber(id) || id->valuedouble < 1) {
        log_warn("rpc_reply_unmatched", "peer=%s", conn_peer(conn));
        return;
    }
    struct pending *p = pending_find(cli, (uint64_t)id->valuedouble);
    if (p == NULL || p->peer != pe) {
        log_debug("rpc_reply_late", "peer=%s id=%.0f", conn_peer(conn), id->valuedouble);
        return;
    }
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(msg, "err");
    const cJSON *resp = cJSON_GetObjectItemCaseSensitive(msg, "response");
    bool disposed = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(msg, "isDisposed"));
    if (err != NULL && !cJSON_IsNull(err)) {
        pending_finish(cli, p, RPC_ERROR, err);
    } else if (disposed) {
        pending_finish(cli, p, RPC_OK, resp);
    } else if (resp != NULL) {
        p->fn(RPC_PARTIAL, resp, p->arg);
    }
    if (pe->gone && pe->inflight == 0) {
        reap_gone(cli);
    }
}

static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct pending *p = arg;
    UNUSED(fd);
    UNUSED(what);
    pending_finish(p->cli, p, p->unsent ? RPC_UNAVAILABLE : RPC_TIMEOUT, NULL);
}

static cJSON *
build_frame(const char *cmd, cJSON *data, cJSON *id)
{
    cJSON *msg = cJSON_CreateObject();
    cJSON *pattern = cJSON_AddObjectToObject(msg, "pattern");
    cJSON_AddStringToObject(pattern, "cmd", cmd);
    if (data == NULL) {
        data = cJSON_CreateObject();
    }
    const char *rid = log_request_id();
    if (rid && cJSON_IsObject(data) && !cJSON_HasObjectItem(data, "_rid")) {
        cJSON_AddStringToObject(data, "_rid", rid);
    }
    cJSON_AddItemToObject(msg, "data", data);
    if (id) {
        cJSON_AddItemToObject(msg, "id", id);
    }
    return msg;
}

void
rpc_client_call(struct rpc_client *cli, const char *cmd, cJSON *data, int timeout_ms,
                rpc_reply_fn fn, void *arg)
{
    struct pending *p = xcalloc(1, sizeof(*p));
    p->id = cli->next_id++;
    p->fn = fn;
    p->arg = arg;
    p->cli = cli;
    cJSON *frame = build_frame(cmd, data, cJSON_CreateNumber((double)p->id));
    struct pending **head = &cli->buckets[p->id % RPC_BUCKETS];
    p->next = *head;
    if (*head) {
        (*head)->prev = p;
    }
    *head = p;
    cli->npending++;
    p->timer = event_new(loop_base(cli->loop), -1, 0, on_deadline, p);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    event_add(p->timer, &tv);

    /* Per request, not per connection: each call goes to the next connected peer. */
    struct peer *pe = pick(cli);
    if (pe && conn_send(pe->conn, frame) == 0) {
        p->peer = pe;
        pe->inflight++;
        cJSON_Delete(frame);
        return;
    }
    if (any_peer(cli, true)) {
        p->unsent = frame; /* a connect is under way: send when one completes */
        return;
    }
    cJSON_Delete(frame);
    /* Not connected: fail on the next loop turn, never from inside the caller's own call. */
    p->unsent = cJSON_CreateNull(); /* marks "never sent" */
    struct timeval now = {0, 0};
    event_add(p->timer, &now);
    for (int i = 0; i < cli->npeers; i++) {
        struct peer *q = cli->peers[i];
        if (q->conn == NULL && !event_pending(q->retry, EV_TIMEOUT, NULL)) {
            start_connect(q);
        }
    }
}

int
rpc_client_emit(struct rpc_client *cli, const char *cmd, cJSON *data)
{
    cJSON *frame = build_frame(cmd, data, NULL);
    struct peer *pe = pick(cli);
    int rc = pe ? conn_send(pe->conn, frame) : -1;
    cJSON_Delete(frame);
    return rc;
}

struct sync_call {
    struct rpc_client *cli; /* borrowed */
    const char *cmd;        /* borrowed from the waiting thread */
    cJSON *data;            /* handed to rpc_client_call */
    int timeout_ms;
    rpc_reply_fn progress; /* optional stream-item hook */
    void *progress_arg;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    int status;
    cJSON *result; /* duplicated for the waiting thread */
};

static void
sync_reply(int status, const cJSON *result, void *arg)
{
    struct sync_call *s = arg;
    if (status == RPC_PARTIAL) {
        if (s->progress) {
            s->progress(status, result, s->progress_arg);
        }
        return;
    }
    pthread_mutex_lock(&s->lock);
    s->status = status;
    s->result = result ? cJSON_Duplicate(result, 1) : NULL;
    s->done = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void
sync_start(void *arg)
{
    struct sync_call *s = arg;
    rpc_client_call(s->cli, s->cmd, s->data, s->timeout_ms, sync_reply, s);
}

enum rpc_status
rpc_client_call_sync(struct rpc_client *cli, const char *cmd, cJSON *data, int timeout_ms,
                     cJSON **result, rpc_reply_fn progress, void *progress_arg)
{
    struct sync_call s = {.cli = cli,
                          .cmd = cmd,
                          .data = data,
                          .timeout_ms = timeout_ms,
                          .progress = progress,
                          .progress_arg = progress_arg};
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.cond, NULL);
    const char *rid = log_request_id();
    if (rid && cJSON_IsObject(data) && !cJSON_HasObjectItem(data, "_rid")) {
        cJSON_AddStringToObject(data, "_rid", rid); /* the loop thread has no request id */
    }
    loop_post(cli->loop, sync_start, &s);
    pthread_mutex_lock(&s.lock);
    while (!s.done) {
        pthread_cond_wait(&s.cond, &s.lock);
    }
    pthread_mutex_unlock(&s.lock);
    pthread_cond_destroy(&s.cond);
    pthread_mutex_destroy(&s.lock);
    *result = s.result;
    return s.status;
}
