/*
 * HTTP front over libevent's evhttp (see http.h). Two kinds of threads:
 *
 * - the front thread runs its own event_base: evhttp accepts, reads and writes every connection
 *   without blocking, so a client trickling its headers costs a descriptor and a timer;
 * - http_threads workers take complete requests (headers and body already buffered) from a queue
 *   and run the handler, which may block.
 *
 * evhttp is not thread-safe: workers never touch it. What a handler sends becomes a `step` that
 * loop_post hands to the front thread; the front thread alone owns evhttp objects and the
 * connection table. A struct http_req is shared: the worker fills the response side, the front
 * the connection side, and loop_post's lock orders the two.
 *
 * libevent 2.1 has no public way to hand an accepted socket to evhttp, nor a hook when a
 * connection is created. So evhttp accepts on our listener, its bufferevent callback (bevcb)
 * notes each new bufferevent, and an event activated there runs right after the accept, before
 * the loop polls again and so before any byte is read: it finds the connection (the bufferevent's
 * callback argument, checked against evhttp_connection_get_bufferevent), admits or closes it, and
 * sets the close callback that keeps the per-address counts right.
 */
#include "http.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "clientaddr.h"
#include "log.h"
#include "loop.h"

#define HTTP_FEW_CONNS 2 /* an address holding fewer may still use the reserve */
#define HTTP_ADDR_BUCKETS 1024
#define HTTP_DRAIN_MS 2000 /* after the workers stop, replies being written get this long */
#define HTTP_BACKLOG 1024
#define HTTP_FD_HEADROOM 128 /* descriptors left for PostgreSQL, RPC, logs when capping */

struct conn;

/* Open connections per bucket key (IPv4 address or IPv6 /64). Front thread only. */
struct addr_count {
    struct addr_count *next; /* hash chain */
    int n;                   /* open connections */
    char key[CLIENTADDR_MAX];
};

struct http_server {
    http_handler_fn fn; /* the application's handler */
    void *arg;          /* its argument */
    struct http_options opt;
    struct loop *loop;                 /* the front thread's loop, owned */
    pthread_t front;                   /* runs loop */
    struct evhttp *http;               /* owned; front thread only */
    struct evhttp_bound_socket *bound; /* the listener, NULL once draining */
    /* front thread only */
    struct event *admit_ev;     /* activated by on_bev: admit the new connections */
    struct bufferevent **fresh; /* bufferevents evhttp created since admit_ev last ran */
    size_t nfresh, capfresh;
    struct conn **byfd; /* open connections by descriptor */
    size_t nbyfd;
    struct addr_count *addrs[HTTP_ADDR_BUCKETS];
    int nconns;             /* admitted and open */
    int reserve;            /* the last `reserve` slots are for addresses with few conns */
    bool draining;          /* http_server_free began */
    struct event *drain_ev; /* polls until connections are gone */
    int64_t drain_deadline; /* ms, monotonic */
    long refused;           /* connections closed at admission since the last log line */
    int64_t refused_logged; /* ms of that log line */
    /* the work queue */
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    struct http_req *qhead, *qtail;
    bool qstop; /* workers exit once the queue is empty */
    pthread_t *workers;
    int nworkers;
};

/* One admitted connection. Front thread only. Freed when closed and no worker holds it. */
struct conn {
    struct http_server *srv;
    struct evhttp_connection *evcon; /* NULL once closed */
    struct evhttp_request *ev;       /* the request being served (owned by us), or NULL */
    struct http_req *active;         /* the request a worker has, or NULL */
    struct event *deadline;          /* the next request must be read by then */
    struct addr_count *addr;         /* this connection's count */
    int fd;
    char peer[CLIENTADDR_MAX]; /* the socket's address */
};

struct hdr {
    char *name, *value;
};

struct http_req {
    struct http_server *srv;
    /* set by the front before the worker sees the request; read-only afterwards */
    struct conn *conn; /* the front's; the worker never follows it */
    const char *method;
    char *path, *query; /* query "" when absent */
    struct hdr *hdrs;
    size_t nhdrs;
    char *body; /* NUL-terminated copy of the body */
    size_t body_len;
    char client[CLIENTADDR_MAX]; /* after X-Forwarded-For when trusted */
    char bucket[CLIENTADDR_MAX];
    char rid[40];
    int64_t queued_ms;
    bool on_front;         /* answered by the front itself: steps run at once */
    struct http_req *next; /* queue link (qlock) */
    /* the worker's */
    int status;     /* status sent, 0 before */
    bool streaming; /* a chunked response is open */
    /* front thread only */
    bool ended; /* the whole response went to evhttp; conn is NULL from then on */
    /* stream flow control: a worker waits for its chunk to leave before it sends more */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool flushing; /* a chunk is on its way */
    bool gone;     /* the connection closed */
};

enum step_kind { STEP_REPLY, STEP_START, STEP_CHUNK, STEP_END, STEP_DONE };

/* A piece of a response, from a worker to the front thread. */
struct step {
    struct http_req *req;
    enum step_kind kind;
    int status;
    char *head; /* "Name: value\r\n..." or NULL */
    char *body;
    size_t len;
};

static void *front_main(void *arg);
static void *worker_main(void *arg);
static struct bufferevent *on_bev(struct event_base *base, void *arg);
static void on_admit(evutil_socket_t fd, short what, void *arg);
static void on_request(struct evhttp_request *ev, void *arg);
static void on_closed(struct evhttp_connection *evcon, void *arg);
static void on_complete(struct evhttp_request *ev, void *arg);
static void on_deadline(evutil_socket_t fd, short what, void *arg);
static void run_step(void *arg);
static void req_free(struct http_req *req);

/* ---- per-address counts ---- */

static struct addr_count **
addr_slot(struct http_server *srv, const char *key)
{
    uint32_t h = 2166136261u;
    for (const char *p = key; *p; p++) {
        h = (h ^ (unsigned char)*p) * 16777619u;
    }
    struct addr_count **pp = &srv->addrs[h % HTTP_ADDR_BUCKETS];
    while (*pp && strcmp((*pp)->key, key) != 0) {
        pp = &(*pp)->next;
    }
    return pp;
}

static int
addr_held(struct http_server *srv, const char *key)
{
    struct addr_count *a = *addr_slot(srv, key);
    return a ? a->n : 0;
}

static struct addr_count *
addr_take(struct http_server *srv, const char *key)
{
    struct addr_count **pp = addr_slot(srv, key);
    if (*pp == NULL) {
        *pp = xcalloc(1, sizeof(**pp));
        snprintf((*pp)->key, sizeof((*pp)->key), "%s", key);
    }
    (*pp)->n++;
    return *pp;
}

static void
addr_release(struct http_server *srv, struct addr_count *a)
{
    if (--a->n > 0) {
        return;
    }
    struct addr_count **pp = addr_slot(srv, a->key);
    *pp = a->next;
    free(a);
}

/* ---- server lifecycle ---- */

struct http_server *
http_server_new(const struct http_options *opt, http_handler_fn fn, void *arg)
{
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    if (evutil_parse_sockaddr_port(opt->listen, (struct sockaddr *)&ss, &sslen) != 0) {
        log_error("http_listen_failed", "addr=%s reason=\"not host:port\"", opt->listen);
        return NULL;
    }
    struct http_server *srv = xcalloc(1, sizeof(*srv));
    srv->fn = fn;
    srv->arg = arg;
    srv->opt = *opt;
    srv->opt.listen = NULL; /* borrowed; not needed after binding */
    /* Every admitted connection holds a descriptor: stay under the limit, or accept() fails
     * with EMFILE and the listener spins. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (rlim_t)srv->opt.max_conns + HTTP_FD_HEADROOM > rl.rlim_cur) {
        int cap = rl.rlim_cur > 2 * HTTP_FD_HEADROOM ? (int)(rl.rlim_cur - HTTP_FD_HEADROOM)
                                                     : (int)(rl.rlim_cur / 2);
        log_warn("http_max_conns_lowered", "configured=%d now=%d nofile=%llu", srv->opt.max_conns,
                 cap, (unsigned long long)rl.rlim_cur);
        srv->opt.max_conns = cap;
    }
    srv->reserve = srv->opt.max_conns / 8;
    if ((srv->loop = loop_new()) == NULL) {
        free(srv);
        return NULL;
    }
    struct event_base *base = loop_base(srv->loop);
    srv->http = evhttp_new(base);
    evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                              EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                              EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                              EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    /* Headers up to max_header_bytes reach on_request, which answers 431 above the limit; evhttp
     * itself stops reading at twice that (and answers a plain 400), which bounds memory. Bodies
     * above max_body_bytes get evhttp's 413 before they are buffered. */
    evhttp_set_max_headers_size(srv->http, (ev_ssize_t)(2 * opt->max_header_bytes));
    evhttp_set_max_body_size(srv->http, (ev_ssize_t)opt->max_body_bytes);
    /* Read (and drop) a too-large declared body before answering 413: closing with unread data
     * makes the kernel send a reset, and the client may lose the answer. conn->deadline still
     * bounds how long that takes. */
    evhttp_set_flags(srv->http, EVHTTP_SERVER_LINGERING_CLOSE);
    /* A write (or read) making no progress this long closes the connection. Reading a whole
     * request has its own, shorter bound: conn->deadline. */
    struct timeval tv = {opt->request_timeout_ms / 1000, (opt->request_timeout_ms % 1000) * 1000};
    evhttp_set_timeout_tv(srv->http, &tv);
    evhttp_set_gencb(srv->http, on_request, srv);
    evhttp_set_bevcb(srv->http, on_bev, srv);
    srv->admit_ev = event_new(base, -1, 0, on_admit, srv);
    struct evconnlistener *lev = evconnlistener_new_bind(
        base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE,
        HTTP_BACKLOG, (struct sockaddr *)&ss, sslen);
    if (lev == NULL || (srv->bound = evhttp_bind_listener(srv->http, lev)) == NULL) {
        log_error("http_listen_failed", "addr=%s", opt->listen);
        if (lev) {
            evconnlistener_free(lev);
        }
        event_free(srv->admit_ev);
        evhttp_free(srv->http);
        loop_free(srv->loop);
        free(srv);
        return NULL;
    }
    pthread_mutex_init(&srv->qlock, NULL);
    pthread_cond_init(&srv->qcond, NULL);
    srv->workers = xcalloc((size_t)opt->threads, sizeof(*srv->workers));
    for (int i = 0; i < opt->threads; i++) {
        if (pthread_create(&srv->workers[i], NULL, worker_main, srv) != 0) {
            log_error("thread_failed", "task=http_worker");
            abort();
        }
        srv->nworkers++;
    }
    if (pthread_create(&srv->front, NULL, front_main, srv) != 0) {
        log_error("thread_failed", "task=http_front");
        abort();
    }
    log_info("http_listening",
             "addr=%s threads=%d max_conns=%d max_conns_per_addr=%d read_timeout_ms=%d",
             opt->listen, opt->threads, srv->opt.max_conns, opt->max_conns_per_addr,
             opt->read_timeout_ms);
    return srv;
}

static void *
front_main(void *arg)
{
    struct http_server *srv = arg;
    log_set_role("gateway");
    if (loop_run(srv->loop) != 0) {
        log_error("http_loop_failed", "reason=libevent");
    }
    return NULL;
}

/* Closes connections that are between requests or still reading one. */
static void
close_idle(struct http_server *srv)
{
    for (size_t fd = 0; fd < srv->nbyfd; fd++) {
        struct conn *c = srv->byfd[fd];
        if (c && c->active == NULL && c->ev == NULL) {
            evhttp_connection_free(c->evcon); /* on_closed frees c */
        }
    }
}

static void
begin_drain(void *arg)
{
    struct http_server *srv = arg;
    srv->draining = true;
    evhttp_del_accept_socket(srv->http, srv->bound); /* closes the listener */
    srv->bound = NULL;
    close_idle(srv);
}

static void
on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
    struct http_server *srv = arg;
    UNUSED(fd);
    UNUSED(what);
    close_idle(srv);
    if (srv->nconns == 0 || time_mono_ms() >= srv->drain_deadline) {
        event_base_loopexit(loop_base(srv->loop), NULL);
    }
}

static void
finish_drain(void *arg)
{
    struct http_server *srv = arg;
    srv->drain_deadline = time_mono_ms() + HTTP_DRAIN_MS;
    srv->drain_ev = loop_timer(srv->loop, 10, true, on_drain_tick, srv);
}

void
http_server_free(struct http_server *srv)
{
    if (srv == NULL) {
        return;
    }
    /* 1. No new connections; idle ones close; replies from now on close theirs. */
    loop_post(srv->loop, begin_drain, srv);
    /* 2. Workers finish every request already read, then exit. */
    pthread_mutex_lock(&srv->qlock);
    srv->qstop = true;
    pthread_cond_broadcast(&srv->qcond);
    pthread_mutex_unlock(&srv->qlock);
    for (int i = 0; i < srv->nworkers; i++) {
        pthread_join(srv->workers[i], NULL);
    }
    /* 3. The front writes what they sent, then its loop returns. */
    loop_post(srv->loop, finish_drain, srv);
    pthread_join(srv->front, NULL);
    /* The front thread is gone: its objects are ours now. evhttp_free closes what is left,
     * running on_closed, which may defer frees to the loop: loop_free runs them. */
    evhttp_free(srv->http);
    if (srv->drain_ev) {
        event_free(srv->drain_ev);
    }
    event_free(srv->admit_ev);
    loop_free(srv->loop);
    pthread_mutex_destroy(&srv->qlock);
    pthread_cond_destroy(&srv->qcond);
    free(srv->workers);
    free(srv->fresh);
    free(srv->byfd);
    free(srv);
}

/* ---- admission ---- */

/* evhttp's hook for a new connection's bufferevent: no descriptor yet, so note it for on_admit. */
static struct bufferevent *
on_bev(struct event_base *base, void *arg)
{
    struct http_server *srv = arg;
    struct bufferevent *bev = bufferevent_socket_new(base, -1, 0); /* as evhttp's own */
    if (bev == NULL) {
        return NULL;
    }
    if (srv->nfresh == srv->capfresh) {
        srv->capfresh = srv->capfresh ? 2 * srv->capfresh : 16;
        srv->fresh = xrealloc(srv->fresh, srv->capfresh * sizeof(*srv->fresh));
    }
    srv->fresh[srv->nfresh++] = bev;
    event_active(srv->admit_ev, EV_TIMEOUT, 0);
    return bev;
}

/* Whether a new connection from bucket key may stay; why not in *why. */
static bool
admit(struct http_server *srv, const char *key, const char **why)
{
    if (srv->draining) {
        *why = "draining";
        return false;
    }
    if (srv->nconns >= srv->opt.max_conns) {
        *why = "max_conns";
        return false;
    }
    if (srv->opt.trust_forwarded) {
        return true; /* every connection comes from the proxy: only the total counts */
    }
    int held = addr_held(srv, key);
    if (held >= srv->opt.max_conns_per_addr) {
        *why = "max_conns_per_addr";
        return false;
    }
    if (srv->nconns >= srv->opt.max_conns - srv->reserve && held >= HTTP_FEW_CONNS) {
        *why = "reserve";
        return false;
    }
    return true;
}

static void
arm_deadline(struct conn *c, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->deadline, &tv);
}

static void
note_refused(struct http_server *srv, const char *peer, const char *why)
{
    srv->refused++;
    log_debug("http_conn_refused", "client=%s reason=%s", peer, why);
    int64_t now = time_mono_ms();
    if (now - srv->refused_logged >= 10000) {
        log_warn("http_conns_refused", "count=%ld open=%d last_client=%s last_reason=%s",
                 srv->refused, srv->nconns, peer, why);
        srv->refused = 0;
        srv->refused_logged = now;
    }
}

static void
on_admit(evutil_socket_t unused, short what, void *arg)
{
    struct http_server *srv = arg;
    UNUSED(unused);
    UNUSED(what);
    for (size_t i = 0; i < srv->nfresh; i++) {
        struct bufferevent *bev = srv->fresh[i];
        void *cbarg = NULL;
        bufferevent_getcb(bev, NULL, NULL, NULL, &cbarg);
        struct evhttp_connection *evcon = cbarg;
        if (evcon == NULL || evhttp_connection_get_bufferevent(evcon) != bev) {
            /* evhttp's layout changed under us: serving unaccounted would void the caps. */
            log_error("http_admission_broken", "reason=\"bufferevent without its connection\"");
            abort();
        }
        const struct sockaddr *sa = evhttp_connection_get_addr(evcon);
        char peer[CLIENTADDR_MAX], key[CLIENTADDR_MAX];
        const char *why = NULL;
        if (sa == NULL || clientaddr_from_sockaddr(sa, peer, sizeof(peer)) != 0 ||
            clientaddr_bucket(peer, key, sizeof(key)) != 0) {
            snprintf(peer, sizeof(peer), "unknown");
            snprintf(key, sizeof(key), "unknown");
        }
        int fd = bufferevent_getfd(bev);
        if (fd < 0 || !admit(srv, key, &why)) {
            note_refused(srv, peer, why ? why : "no_socket");
            evhttp_connection_free(evcon); /* no close callback yet: nothing else to undo */
            continue;
        }
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct conn *c = xcalloc(1, sizeof(*c));
        c->srv = srv;
        c->evcon = evcon;
        c->fd = fd;
        snprintf(c->peer, sizeof(c->peer), "%s", peer);
        c->addr = addr_take(srv, key);
        c->deadline = evtimer_new(loop_base(srv->loop), on_deadline, c);
        if ((size_t)fd >= srv->nbyfd) {
            size_t n = srv->nbyfd ? srv->nbyfd : 64;
            while (n <= (size_t)fd) {
                n *= 2;
            }
            srv->byfd = xrealloc(srv->byfd, n * sizeof(*srv->byfd));
            memset(srv->byfd + srv->nbyfd, 0, (n - srv->nbyfd) * sizeof(*srv->byfd));
            srv->nbyfd = n;
        }
        srv->byfd[fd] = c;
        srv->nconns++;
        evhttp_connection_set_closecb(evcon, on_closed, c);
        arm_deadline(c, srv->opt.read_timeout_ms);
    }
    srv->nfresh = 0;
}

static void
conn_free(struct conn *c)
{
    event_free(c->deadline);
    free(c);
}

static void
free_ev(void *arg)
{
    evhttp_request_free(arg);
}

/* evhttp closes the connection (peer gone, timeout, error, our own evhttp_connection_free). */
static void
on_closed(struct evhttp_connection *evcon, void *arg)
{
    struct conn *c = arg;
    struct http_server *srv = c->srv;
    UNUSED(evcon);
    evtimer_del(c->deadline);
    c->evcon = NULL;
    srv->byfd[c->fd] = NULL;
    srv->nconns--;
    addr_release(srv, c->addr);
    c->addr = NULL;
    if (c->ev) {
        /* We own it (evhttp_request_own): evhttp leaves it to us, but may still walk its list. */
        loop_defer(srv->loop, free_ev, c->ev);
        c->ev = NULL;
    }
    if (c->active) {
        struct http_req *req = c->active;
        pthread_mutex_lock(&req->lock);
        req->gone = true;
        pthread_cond_signal(&req->cond);
        pthread_mutex_unlock(&req->lock);
    } else {
        conn_free(c);
    }
}

/* The next request did not arrive in full within read_timeout_ms (or the server drains). */
static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    UNUSED(fd);
    UNUSED(what);
    log_debug("http_read_timeout", "client=%s", c->peer);
    evhttp_connection_free(c->evcon); /* on_closed frees c */
}

/* The response was written: the connection waits for the next request. */
static void
on_complete(struct evhttp_request *ev, void *arg)
{
    struct conn *c = arg;
    UNUSED(ev);
    c->ev = NULL; /* evhttp frees it after this call */
    if (c->evcon) {
        arm_deadline(c, c->srv->draining ? 0 : c->srv->opt.read_timeout_ms);
    }
}

/* ---- requests ---- */

static const char *
method_name(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "UNKNOWN";
    }
}

static bool
valid_rid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_') ||
            n >= 36) {
            return false;
        }
    }
    return n > 0;
}

/* Copies what the handler may read, so the worker never touches evhttp. */
static struct http_req *
req_new(struct http_server *srv, struct conn *c, struct evhttp_request *ev, size_t *head_bytes)
{
    struct http_req *req = xcalloc(1, sizeof(*req));
    req->srv = srv;
    req->conn = c;
    pthread_mutex_init(&req->lock, NULL);
    pthread_cond_init(&req->cond, NULL);
    req->method = method_name(evhttp_request_get_command(ev));
    const char *uri = evhttp_request_get_uri(ev);
    uri = uri ? uri : "/";
    size_t plen = strcspn(uri, "?");
    req->path = xstrndup(uri, plen);
    req->query = xstrdup(uri[plen] == '?' ? uri + plen + 1 : "");
    *head_bytes = strlen(uri) + 16; /* the request line */
    struct evkeyvalq *in = evhttp_request_get_input_headers(ev);
    const char *xff[32]; /* X-Forwarded-For lines; only the last one is used */
    size_t nxff = 0;
    for (struct evkeyval *kv = in->tqh_first; kv; kv = kv->next.tqe_next) {
        req->nhdrs++;
    }
    req->hdrs = xcalloc(req->nhdrs ? req->nhdrs : 1, sizeof(*req->hdrs));
    size_t i = 0;
    for (struct evkeyval *kv = in->tqh_first; kv; kv = kv->next.tqe_next, i++) {
        req->hdrs[i].name = xstrdup(kv->key);
        req->hdrs[i].value = xstrdup(kv->value);
        *head_bytes += strlen(kv->key) + strlen(kv->value) + 4;
        if (strcasecmp(kv->key, "X-Forwarded-For") == 0) {
            xff[nxff < ARRAY_SIZE(xff) ? nxff++ : nxff - 1] = req->hdrs[i].value;
        }
    }
    struct evbuffer *body = evhttp_request_get_input_buffer(ev);
    req->body_len = evbuffer_get_length(body);
    req->body = xmalloc(req->body_len + 1);
    evbuffer_remove(body, req->body, req->body_len);
    req->body[req->body_len] = '\0';
    snprintf(req->client, sizeof(req->client), "%s", c->peer);
    char fwd[CLIENTADDR_MAX];
    if (srv->opt.trust_forwarded && nxff > 0 &&
        clientaddr_forwarded(xff, nxff, fwd, sizeof(fwd)) == 0) {
        snprintf(req->client, sizeof(req->client), "%s", fwd);
    }
    if (clientaddr_bucket(req->client, req->bucket, sizeof(req->bucket)) != 0) {
        snprintf(req->bucket, sizeof(req->bucket), "%s", req->client);
    }
    const char *rid = http_header(req, "X-Request-Id");
    if (rid && valid_rid(rid)) {
        snprintf(req->rid, sizeof(req->rid), "%s", rid);
    } else {
        util_random_hex(req->rid, 16);
    }
    req->queued_ms = time_mono_ms();
    return req;
}

static void
req_free(struct http_req *req)
{
    for (size_t i = 0; i < req->nhdrs; i++) {
        free(req->hdrs[i].name);
        free(req->hdrs[i].value);
    }
    free(req->hdrs);
    free(req->path);
    free(req->query);
    free(req->body);
    pthread_mutex_destroy(&req->lock);
    pthread_cond_destroy(&req->cond);
    free(req);
}

/* Answers from the front thread itself (431, draining), without a worker. */
static void
front_problem(struct http_req *req, int status, const char *code, const char *detail)
{
    req->on_front = true;
    http_problem(req, status, code, detail, NULL);
    struct step *done = xcalloc(1, sizeof(*done));
    done->req = req;
    done->kind = STEP_DONE;
    run_step(done);
}

/* evhttp read a whole request (headers and body). */
static void
on_request(struct evhttp_request *ev, void *arg)
{
    struct http_server *srv = arg;
    struct evhttp_connection *evcon = evhttp_request_get_connection(ev);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    int fd = bev ? bufferevent_getfd(bev) : -1;
    struct conn *c = fd >= 0 && (size_t)fd < srv->nbyfd ? srv->byfd[fd] : NULL;
    if (c == NULL || c->evcon != evcon || c->ev != NULL || c->active != NULL) {
        log_error("http_unknown_connection", "fd=%d", fd); /* admission runs before any read */
        evhttp_send_error(ev, 500, NULL);
        return;
    }
    evtimer_del(c->deadline);
    evhttp_request_own(ev); /* ours until on_complete or on_closed, whatever evhttp does */
    evhttp_request_set_on_complete_cb(ev, on_complete, c);
    c->ev = ev;
    size_t head_bytes = 0;
    struct http_req *req = req_new(srv, c, ev, &head_bytes);
    c->active = req;
    if (head_bytes > srv->opt.max_header_bytes) {
        char detail[96];
        snprintf(detail, sizeof(detail), "the request line and headers exceed %zu bytes",
                 srv->opt.max_header_bytes);
        front_problem(req, 431, "headers_too_large", detail);
        return;
    }
    if (srv->draining) {
        front_problem(req, 503, "unavailable", "the server is shutting down");
        return;
    }
    pthread_mutex_lock(&srv->qlock);
    if (srv->qtail) {
        srv->qtail->next = req;
    } else {
        srv->qhead = req;
    }
    srv->qtail = req;
    pthread_cond_signal(&srv->qcond);
    pthread_mutex_unlock(&srv->qlock);
}

static void *
worker_main(void *arg)
{
    struct http_server *srv = arg;
    log_set_role("gateway");
    for (;;) {
        pthread_mutex_lock(&srv->qlock);
        while (srv->qhead == NULL && !srv->qstop) {
            pthread_cond_wait(&srv->qcond, &srv->qlock);
        }
        struct http_req *req = srv->qhead;
        if (req) {
            srv->qhead = req->next;
            if (srv->qhead == NULL) {
                srv->qtail = NULL;
            }
        }
        pthread_mutex_unlock(&srv->qlock);
        if (req == NULL) {
            return NULL; /* stopping and nothing left */
        }
        log_set_request_id(req->rid);
        if (time_mono_ms() - req->queued_ms > srv->opt.request_timeout_ms) {
            /* Every worker was busy for a whole request deadline: the client has likely given
             * up, and running the handler now would only deepen the backlog. */
            http_problem(req, 503, "overloaded", "the server is too busy; retry later",
                         "Retry-After: 1\r\n");
        } else {
            srv->fn(req, srv->arg);
        }
        if (req->status == 0) {
            http_problem(req, 500, "internal", "the handler sent no response", NULL);
        }
        log_set_request_id(NULL);
        struct step *done = xcalloc(1, sizeof(*done));
        done->req = req;
        done->kind = STEP_DONE;
        loop_post(srv->loop, run_step, done);
    }
}

/* ---- steps: responses on the front thread ---- */

static void
submit(struct http_req *req, enum step_kind kind, int status, struct sbuf *head, const char *body,
       size_t len)
{
    struct step *s = xcalloc(1, sizeof(*s));
    s->req = req;
    s->kind = kind;
    s->status = status;
    s->head = head ? sbuf_steal(head) : NULL;
    if (len > 0) {
        s->body = xmalloc(len);
        memcpy(s->body, body, len);
        s->len = len;
    }
    if (req->on_front) {
        run_step(s);
    } else {
        loop_post(req->srv->loop, run_step, s);
    }
}

/* Adds the "Name: value\r\n" lines of head to the response headers. */
static void
set_headers(struct evhttp_request *ev, const char *head, bool close)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(ev);
    for (const char *p = head; p && *p;) {
        const char *eol = strstr(p, "\r\n");
        size_t n = eol ? (size_t)(eol - p) : strlen(p);
        const char *colon = memchr(p, ':', n);
        if (colon) {
            char *name = xstrndup(p, (size_t)(colon - p));
            const char *v = colon + 1;
            while (*v == ' ') {
                v++;
            }
            char *value = xstrndup(v, n - (size_t)(v - p));
            if (evhttp_add_header(out, name, value) != 0) {
                log_warn("http_bad_header", "name=\"%.64s\"", name);
            }
            free(name);
            free(value);
        }
        p = eol ? eol + 2 : p + n;
    }
    if (close) {
        evhttp_add_header(out, "Connection", "close");
    }
}

static void
on_flushed(struct evhttp_connection *evcon, void *arg)
{
    struct http_req *req = arg;
    UNUSED(evcon);
    pthread_mutex_lock(&req->lock);
    req->flushing = false;
    pthread_cond_signal(&req->cond);
    pthread_mutex_unlock(&req->lock);
}

/*
 * The whole response is with evhttp: the connection no longer waits for this request's worker
 * (which may still log and count), so a quick client's next request on it is served at once.
 */
static void
req_detach(struct http_req *req)
{
    req->ended = true;
    req->conn->active = NULL;
    req->conn = NULL;
}

static void
run_step(void *arg)
{
    struct step *s = arg;
    struct http_req *req = s->req;
    struct conn *c = req->conn; /* NULL once detached: then only STEP_DONE may come */
    struct http_server *srv = req->srv;
    struct evhttp_request *ev = c ? c->ev : NULL; /* NULL once the connection closed */
    switch (s->kind) {
    case STEP_REPLY:
    case STEP_START:
        if (ev) {
            set_headers(ev, s->head, srv->draining);
            if (s->kind == STEP_START) {
                evhttp_send_reply_start(ev, s->status, http_status_text(s->status));
                break;
            }
            struct evbuffer *b = evbuffer_new();
            evbuffer_add(b, s->body, s->len);
            req_detach(req); /* first: evhttp may finish, and close, from inside the call */
            evhttp_send_reply(ev, s->status, http_status_text(s->status), b);
            evbuffer_free(b);
        }
        break;
    case STEP_CHUNK:
        if (ev) {
            struct evbuffer *b = evbuffer_new();
            evbuffer_add(b, s->body, s->len);
            evhttp_send_reply_chunk_with_cb(ev, b, on_flushed, req);
            evbuffer_free(b);
            struct bufferevent *bev = evhttp_connection_get_bufferevent(c->evcon);
            if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
                on_flushed(NULL, req); /* nothing to wait for (a HEAD request) */
            }
        } else {
            on_flushed(NULL, req); /* the worker sees req->gone */
        }
        break;
    case STEP_END:
        if (ev) {
            req_detach(req); /* first: evhttp may finish, and close, from inside the call */
            evhttp_send_reply_end(ev);
        }
        break;
    case STEP_DONE:
        if (!req->ended) {
            c->active = NULL;
            if (c->evcon == NULL) {
                conn_free(c); /* closed while the worker had it */
            } else {
                /* A stream left unterminated (the source failed mid-way): only closing the
                 * connection tells the client the body is incomplete. */
                evhttp_connection_free(c->evcon); /* on_closed frees c */
            }
        }
        req_free(req);
        break;
    }
    free(s->head);
    free(s->body);
    free(s);
}

/* ---- accessors ---- */

const char *
http_method(const struct http_req *req)
{
    return req->method;
}

const char *
http_path(const struct http_req *req)
{
    return req->path;
}

const char *
http_query(const struct http_req *req)
{
    return req->query;
}

const char *
http_header(const struct http_req *req, const char *name)
{
    for (size_t i = 0; i < req->nhdrs; i++) {
        if (strcasecmp(req->hdrs[i].name, name) == 0) {
            return req->hdrs[i].value;
        }
    }
    return NULL;
}

const char *
http_client_addr(const struct http_req *req)
{
    return req->client;
}

const char *
http_client_bucket(const struct http_req *req)
{
    return req->bucket;
}

const char *
http_request_id(const struct http_req *req)
{
    return req->rid;
}

bool
http_cookie(const struct http_req *req, const char *name, char *out, size_t size)
{
    const char *h = http_header(req, "Cookie");
    size_t nlen = strlen(name);
    while (h && *h) {
        while (*h == ' ' || *h == ';') {
            h++;
        }
        size_t n = strcspn(h, ";");
        if (n > nlen && strncmp(h, name, nlen) == 0 && h[nlen] == '=') {
            size_t vlen = n - nlen - 1;
            if (vlen >= size) {
                return false;
            }
            memcpy(out, h + nlen + 1, vlen);
            out[vlen] = '\0';
            return true;
        }
        h += n;
    }
    return false;
}

int
http_read_body(struct http_req *req, size_t max, char **body, size_t *len)
{
    /* The front read the whole body already (evhttp refused more than max_body_bytes). */
    if (req->body_len > max) {
        return HTTP_BODY_TOO_LARGE;
    }
    *body = xmalloc(req->body_len + 1);
    memcpy(*body, req->body, req->body_len + 1);
    *len = req->body_len;
    return HTTP_BODY_OK;
}

const char *
http_status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

/* True if a "Name: value\r\n..." block has a header called name (case-insensitive). */
static bool
has_header(const char *block, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = block; p && *p;) {
        if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
            return true;
        }
        p = strstr(p, "\r\n");
        p = p ? p + 2 : NULL;
    }
    return false;
}

/*
 * The status line and our headers. extra may bring its own Cache-Control and
 * Content-Security-Policy (the web app's pages and files do): then ours are left out, since a
 * browser obeys every CSP header it gets and default-src 'none' would block the page.
 */
static void
append_head(struct sbuf *b, const struct http_req *req, int status, const char *content_type,
            const char *extra)
{
    if (status != 304 && status != 204) {
        sbuf_appendf(b, "Content-Type: %s\r\n", content_type);
    }
    if (extra == NULL || !has_header(extra, "Cache-Control")) {
        sbuf_appends(b, "Cache-Control: no-store\r\n");
    }
    if (extra == NULL || !has_header(extra, "Content-Security-Policy")) {
        sbuf_appends(b, "Content-Security-Policy: default-src 'none'; frame-ancestors 'none'\r\n");
    }
    sbuf_appendf(b, "X-Content-Type-Options: nosniff\r\nX-Request-Id: %s\r\n%s", req->rid,
                 extra ? extra : "");
}

void
http_reply(struct http_req *req, int status, const char *content_type, const char *extra_headers,
           const char *body, size_t len)
{
    if (req->status != 0) {
        log_error("http_double_reply", "status=%d first=%d", status, req->status);
        return;
    }
    struct sbuf head = {0};
    append_head(&head, req, status, content_type, extra_headers);
    if (status == 204 || status == 304) {
        len = 0; /* evhttp sends neither body nor Content-Length for these */
    }
    req->status = status;
    submit(req, STEP_REPLY, status, &head, body, len);
}

void
http_reply_json(struct http_req *req, int status, const cJSON *body, const char *extra_headers)
{
    char *text = cJSON_PrintUnformatted(body);
    if (text == NULL) {
        http_problem(req, 500, "internal", "response could not be encoded", NULL);
        return;
    }
    http_reply(req, status, "application/json", extra_headers, text, strlen(text));
    free(text);
}

void
http_problem(struct http_req *req, int status, const char *code, const char *detail,
             const char *extra_headers)
{
    cJSON *p = cJSON_CreateObject();
    char type[96];
    snprintf(type, sizeof(type), "urn:chanced:problem:%s", code);
    cJSON_AddStringToObject(p, "type", type);
    cJSON_AddStringToObject(p, "title", http_status_text(status));
    cJSON_AddNumberToObject(p, "status", status);
    cJSON_AddStringToObject(p, "code", code);
    if (detail) {
        cJSON_AddStringToObject(p, "detail", detail);
    }
    cJSON_AddStringToObject(p, "instance", http_path(req));
    cJSON_AddStringToObject(p, "request_id", req->rid);
    char *text = cJSON_PrintUnformatted(p);
    cJSON_Delete(p);
    http_reply(req, status, "application/problem+json", extra_headers, text, strlen(text));
    free(text);
}

void
http_stream_begin(struct http_req *req, int status, const char *content_type,
                  const char *extra_headers)
{
    if (req->status != 0) {
        log_error("http_double_reply", "status=%d first=%d", status, req->status);
        return;
    }
    struct sbuf head = {0};
    append_head(&head, req, status, content_type, extra_headers);
    req->status = status;
    req->streaming = true;
    submit(req, STEP_START, status, &head, NULL, 0);
}

int
http_stream_write(struct http_req *req, const char *data, size_t len)
{
    if (!req->streaming) {
        return -1;
    }
    if (len == 0) {
        return 0; /* an empty chunk would end the stream */
    }
    /* One chunk in flight: the worker waits until it left, so a slow reader holds back the
     * producer instead of growing the output buffer. The write timeout bounds the wait. */
    pthread_mutex_lock(&req->lock);
    req->flushing = true;
    pthread_mutex_unlock(&req->lock);
    submit(req, STEP_CHUNK, 0, NULL, data, len);
    pthread_mutex_lock(&req->lock);
    while (req->flushing && !req->gone) {
        pthread_cond_wait(&req->cond, &req->lock);
    }
    bool gone = req->gone;
    pthread_mutex_unlock(&req->lock);
    return gone ? -1 : 0;
}

void
http_stream_end(struct http_req *req)
{
    if (req->streaming) {
        req->streaming = false;
        submit(req, STEP_END, 0, NULL, NULL, 0);
    }
}

int
http_status(const struct http_req *req)
{
    return req->status;
}
