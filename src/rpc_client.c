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
#define RPC_LIVED_MS 1000 /* a conn up this long that the server closes is redialled at once */

struct pending {
    uint64_t id;                 /* numeric request id, echoed by the server */
    rpc_reply_fn fn;             /* caller's callback */
    void *arg;                   /* its argument */
    struct event *timer;         /* deadline */
    struct rpc_client *cli;      /* borrowed back-pointer */
    cJSON *unsent;               /* frame waiting for the connect, or NULL once sent */
    struct pending *next, *prev; /* bucket chain */
};

struct rpc_client {
    struct loop *loop; /* borrowed */
    char *host;        /* owned */
    int port;
    struct conn_limits limits;
    SSL_CTX *tls;            /* owned; NULL: plain TCP */
    struct metrics *metrics; /* borrowed, or NULL */
    const char *role;        /* metrics label */
    struct conn *conn;       /* current conn or NULL */
    bool connected;          /* conn finished connecting (and its TLS handshake) */
    int64_t up_since;        /* monotonic ms when the current conn became usable */
    int backoff_ms;          /* next reconnect delay */
    struct event *retry;     /* reconnect timer */
    uint64_t next_id;
    struct pending *buckets[RPC_BUCKETS];
    size_t npending;
};

static void on_frame(struct conn *conn, cJSON *msg, bool has_nul, void *arg);
static void on_close(struct conn *conn, const char *why, void *arg);
static void on_connect(struct conn *conn, void *arg);
static void start_connect(struct rpc_client *cli);

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

static void
fail_all(struct rpc_client *cli)
{
    for (size_t b = 0; b < RPC_BUCKETS; b++) {
        while (cli->buckets[b]) {
            struct pending *p = cli->buckets[b];
            pending_finish(cli, p, p->unsent ? RPC_UNAVAILABLE : RPC_LOST, NULL);
        }
    }
}

static void
on_retry(evutil_socket_t fd, short what, void *arg)
{
    UNUSED(fd);
    UNUSED(what);
    start_connect(arg);
}

static void
schedule_retry(struct rpc_client *cli)
{
    struct timeval tv = {cli->backoff_ms / 1000, (cli->backoff_ms % 1000) * 1000};
    event_add(cli->retry, &tv);
    cli->backoff_ms =
        cli->backoff_ms * 2 > RPC_BACKOFF_MAX_MS ? RPC_BACKOFF_MAX_MS : cli->backoff_ms * 2;
}

static void
start_connect(struct rpc_client *cli)
{
    cli->conn =
        conn_connect(cli->loop, cli->host, cli->port, &cli->limits, cli->tls, &client_handler, cli);
    if (cli->conn == NULL) {
        schedule_retry(cli);
    }
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

int
rpc_client_check_conf(const struct core_conf *core, const char *key, const char *addr, char *err,
                      size_t errlen)
{
    struct rpc_client_opts o = {0};
    rpc_client_opts_from_core(&o, core);
    char *host = NULL;
    int port;
    if (addr == NULL || util_parse_hostport(addr, &host, &port) != 0) {
        snprintf(err, errlen, "%s: cannot parse address %s", key, addr ? addr : "");
        return -1;
    }
    bool loopback = rpc_host_is_loopback(host);
    free(host);
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
    if (util_parse_hostport(addr, &cli->host, &cli->port) != 0) {
        snprintf(err, errlen, "cannot parse address %s", addr);
        free(cli);
        return NULL;
    }
    if (client_tls(&opts->tls, addr, &cli->tls, err, errlen) != 0) {
        free(cli->host);
        free(cli);
        return NULL;
    }
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
    cli->backoff_ms = RPC_BACKOFF_MIN_MS;
    cli->next_id = 1;
    cli->retry = event_new(loop_base(loop), -1, 0, on_retry, cli);
    start_connect(cli);
    return cli;
}

void
rpc_client_free(struct rpc_client *cli)
{
    if (cli == NULL) {
        return;
    }
    event_free(cli->retry);
    cli->retry = NULL;
    if (cli->conn) {
        struct conn *c = cli->conn;
        cli->conn = NULL;
        conn_close(c, "client freed");
    }
    fail_all(cli);
    SSL_CTX_free(cli->tls);
    free(cli->host);
    free(cli);
}

bool
rpc_client_connected(const struct rpc_client *cli)
{
    return cli->connected;
}

static void
on_connect(struct conn *conn, void *arg)
{
    struct rpc_client *cli = arg;
    cli->connected = true;
    cli->up_since = time_mono_ms();
    cli->backoff_ms = RPC_BACKOFF_MIN_MS;
    log_info("rpc_connected", "peer=%s tls=%s", conn_peer(conn), cli->tls ? "on" : "off");
    for (size_t b = 0; b < RPC_BUCKETS; b++) {
        for (struct pending *p = cli->buckets[b]; p; p = p->next) {
            if (p->unsent) {
                if (conn_send(conn, p->unsent) != 0) {
                    break;
                }
                cJSON_Delete(p->unsent);
                p->unsent = NULL;
            }
        }
    }
}

static void
on_close(struct conn *conn, const char *why, void *arg)
{
    struct rpc_client *cli = arg;
    bool was_up = cli->connected;
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
    cli->connected = false;
    cli->conn = NULL;
    if (cli->retry == NULL) {
        return; /* being freed */
    }
    fail_all(cli);
    if (was_up && time_mono_ms() - cli->up_since >= RPC_LIVED_MS) {
        /* A conn that served a while and was closed (the server's idle timeout, a restart):
         * dial again now, so the next call finds a conn under way rather than none. */
        start_connect(cli);
    } else {
        schedule_retry(cli);
    }
}

static void
on_frame(struct conn *conn, cJSON *msg, bool has_nul, void *arg)
{
    struct rpc_client *cli = arg;
    UNUSED(has_nul); /* replies come from our own services; a truncated string is harmless */
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(msg, "id");
    if (!cJSON_IsNumber(id) || id->valuedouble < 1) {
        log_warn("rpc_reply_unmatched", "peer=%s", conn_peer(conn));
        return;
    }
    struct pending *p = pending_find(cli, (uint64_t)id->valuedouble);
    if (p == NULL) {
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

    if (cli->connected && cli->conn && conn_send(cli->conn, frame) == 0) {
        cJSON_Delete(frame);
        return;
    }
    if (cli->conn != NULL && !cli->connected) {
        p->unsent = frame; /* a connect is under way: send when it completes */
        return;
    }
    cJSON_Delete(frame);
    /* Not connected: fail on the next loop turn, never from inside the caller's own call. */
    p->unsent = cJSON_CreateNull(); /* marks "never sent" */
    struct timeval now = {0, 0};
    event_add(p->timer, &now);
    if (cli->conn == NULL && !event_pending(cli->retry, EV_TIMEOUT, NULL)) {
        start_connect(cli);
    }
}

int
rpc_client_emit(struct rpc_client *cli, const char *cmd, cJSON *data)
{
    cJSON *frame = build_frame(cmd, data, NULL);
    int rc = cli->connected && cli->conn ? conn_send(cli->conn, frame) : -1;
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
