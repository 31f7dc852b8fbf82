/*
 * The chance role's Redis client (redis.h): hiredis' reader and formatter over bufferevents,
 * pipelined batches, EVALSHA with NOSCRIPT fallback, Redis Cluster routing, health checks.
 */
#include "redis.h"

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "log.h"
#include "loop.h"
#include "redis_int.h"
#include "tls.h"

/* ---- helpers ---- */

static void
sha1_hex(const char *s, char out[41])
{
    /* Redis names scripts by the SHA-1 of their source; EVALSHA needs the same name. */
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_Digest(s, strlen(s), md, &n, EVP_sha1(), NULL) != 1 || n != 20) {
        abort();
    }
    for (unsigned int i = 0; i < n; i++) {
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    }
}

static bool
arg_is(const struct bcmd *c, int i, const char *word)
{
    return i < c->argc && strcasecmp(c->argv[i], word) == 0;
}

/* The slot of a command's key (the first key it names), or -1 for keyless commands. */
static int
command_slot(const struct bcmd *c)
{
    int k = -1;
    if (arg_is(c, 0, "EVALSHA") || arg_is(c, 0, "EVAL")) {
        k = c->argc > 3 && atoi(c->argv[2]) > 0 ? 3 : -1;
    } else if (arg_is(c, 0, "XREADGROUP") || arg_is(c, 0, "XREAD")) {
        for (int i = 1; i + 1 < c->argc; i++) {
            if (arg_is(c, i, "STREAMS")) {
                k = i + 1;
                break;
            }
        }
    } else if (arg_is(c, 0, "XGROUP") || arg_is(c, 0, "XINFO")) {
        k = c->argc > 2 ? 2 : -1;
    } else if (arg_is(c, 0, "SCRIPT") || arg_is(c, 0, "PING") || arg_is(c, 0, "CLUSTER") ||
               arg_is(c, 0, "INFO") || arg_is(c, 0, "TIME")) {
        k = -1;
    } else if (c->argc > 1) {
        k = 1;
    }
    return k < 0 ? -1 : cluster_slot(c->argv[k], c->lens[k]);
}

static cJSON *
reply_to_json(const redisReply *rep)
{
    switch (rep->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS: {
        /* Our values are text; binary-safe copies would need another representation. */
        char *s = xstrndup(rep->str, rep->len);
        cJSON *j = cJSON_CreateString(s);
        free(s);
        return j;
    }
    case REDIS_REPLY_INTEGER: return cJSON_CreateNumber((double)rep->integer);
    case REDIS_REPLY_ARRAY: {
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; i < rep->elements; i++) {
            cJSON_AddItemToArray(arr, reply_to_json(rep->element[i]));
        }
        return arr;
    }
    case REDIS_REPLY_ERROR: {
        cJSON *o = cJSON_CreateObject();
        char *s = xstrndup(rep->str, rep->len);
        cJSON_AddStringToObject(o, "error", s);
        free(s);
        return o;
    }
    default: return cJSON_CreateNull();
    }
}

static bool
is_error(const redisReply *rep, const char *prefix)
{
    size_t n = strlen(prefix);
    return rep && rep->type == REDIS_REPLY_ERROR && rep->len >= n &&
           strncmp(rep->str, prefix, n) == 0;
}

/* ---- writing ---- */

/* Writes a formatted command and queues its reply slot. */
static void
node_write(struct rnode *n, const char *buf, size_t len, struct bcmd *cmd, internal_fn fn,
           void *arg)
{
    struct rreq *q = xcalloc(1, sizeof(*q));
    q->cmd = cmd;
    q->fn = fn;
    q->arg = arg;
    q->sent_ms = n->last_io_ms = time_mono_ms();
    if (n->sent_tail) {
        n->sent_tail->next = q;
    } else {
        n->sent_head = q;
    }
    n->sent_tail = q;
    bufferevent_write(n->bev, buf, len);
}

void
redis_node_internal(struct rnode *n, internal_fn fn, void *arg, int argc, const char **argv,
                    const size_t *lens)
{
    char *buf;
    int len = redisFormatCommandArgv(&buf, argc, argv, lens);
    if (len < 0) {
        abort();
    }
    node_write(n, buf, (size_t)len, NULL, fn, arg);
    redisFreeCommand(buf);
}

/* Writes a batch command (as EVAL with the script body when as_eval). */
static void
node_send_cmd(struct rnode *n, struct bcmd *c, bool as_eval)
{
    if (c->ask) {
        const char *asking[] = {"ASKING"};
        redis_node_internal(n, NULL, NULL, 1, asking, NULL);
        c->ask = false;
    }
    const char **argv = xcalloc((size_t)c->argc, sizeof(char *));
    size_t *lens = xcalloc((size_t)c->argc, sizeof(size_t));
    for (int i = 0; i < c->argc; i++) {
        argv[i] = c->argv[i];
        lens[i] = c->lens[i];
    }
    if (as_eval) {
        /* EVAL <body> re-loads the script as a side effect, so later EVALSHAs work again. */
        argv[0] = "EVAL";
        lens[0] = 4;
        argv[1] = c->b->r->scripts[c->script];
        lens[1] = strlen(argv[1]);
    }
    char *buf;
    int len = redisFormatCommandArgv(&buf, c->argc, argv, lens);
    free(argv);
    free(lens);
    if (len < 0) {
        abort();
    }
    c->in_flight = true;
    c->b->sent++;
    node_write(n, buf, (size_t)len, c, NULL, NULL);
    redisFreeCommand(buf);
}

/* ---- batches ---- */

static void
cmd_free(struct bcmd *c)
{
    for (int i = 0; i < c->argc; i++) {
        free(c->argv[i]);
    }
    free(c->argv);
    free(c->lens);
}

static void
batch_free(struct redis_batch *b)
{
    for (int i = 0; i < b->ncmds; i++) {
        cmd_free(&b->cmds[i]);
        cJSON_Delete(b->replies ? b->replies[i] : NULL);
    }
    if (b->timer) {
        event_free(b->timer);
    }
    free(b->cmds);
    free(b->replies);
    free(b);
}

/* Calls done once; frees the batch when no command is outstanding any more. */
static void
batch_finish(struct redis_batch *b, enum redis_status status)
{
    if (!b->finished) {
        b->finished = true;
        if (b->timer) {
            event_del(b->timer);
        }
        cJSON *arr = NULL;
        if (status == REDIS_DONE) {
            arr = cJSON_CreateArray();
            for (int i = 0; i < b->ncmds; i++) {
                cJSON_AddItemToArray(arr, b->replies[i] ? b->replies[i] : cJSON_CreateNull());
                b->replies[i] = NULL;
            }
        }
        b->done(status, arr, b->arg);
    }
    if (b->outstanding == 0) {
        batch_free(b);
    }
}

void
redis_wait_unlink(struct bcmd *c)
{
    struct rnode *n = c->wait_node;
    if (n == NULL) {
        return;
    }
    if (c->wprev) {
        c->wprev->wnext = c->wnext;
    } else {
        n->wait_head = c->wnext;
    }
    if (c->wnext) {
        c->wnext->wprev = c->wprev;
    } else {
        n->wait_tail = c->wprev;
    }
    c->wnext = c->wprev = NULL;
    c->wait_node = NULL;
}

static void
wait_push(struct rnode *n, struct bcmd *c)
{
    c->wait_node = n;
    c->wnext = NULL;
    c->wprev = n->wait_tail;
    if (n->wait_tail) {
        n->wait_tail->wnext = c;
    } else {
        n->wait_head = c;
    }
    n->wait_tail = c;
}

static void
retry_unlink(struct redis *r, struct bcmd *c)
{
    for (struct bcmd **p = &r->retry_head; *p; p = &(*p)->rnext) {
        if (*p == c) {
            *p = c->rnext;
            c->rnext = NULL;
            c->retry_at = 0;
            return;
        }
    }
}

/* A command is over (reply stored, or given up); finishes or frees its batch when it was the
 * last one. */
static void
cmd_done(struct bcmd *c)
{
    struct redis_batch *b = c->b;
    c->done = true;
    c->in_flight = false;
    b->outstanding--;
    if (b->outstanding == 0) {
        batch_finish(b, REDIS_DONE);
    }
}

/* The node failed with this command written: the outcome is unknown. */
static void
cmd_finish_null(struct bcmd *c)
{
    struct redis_batch *b = c->b;
    c->done = true;
    c->in_flight = false;
    b->outstanding--;
    batch_finish(b, REDIS_TIMEOUT);
}

static void
on_batch_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct redis_batch *b = arg;
    struct redis *r = b->r;
    UNUSED(fd);
    UNUSED(what);
    /* Commands not written yet never will be; written ones finish when their node answers or
     * is dropped by the health check. */
    for (int i = 0; i < b->ncmds; i++) {
        struct bcmd *c = &b->cmds[i];
        if (!c->done && !c->in_flight) {
            redis_wait_unlink(c);
            retry_unlink(r, c);
            c->done = true;
            b->outstanding--;
        }
    }
    if (!b->finished) {
        log_warn("redis_timeout", "commands=%d outstanding=%d", b->ncmds, b->outstanding);
    }
    batch_finish(b, b->sent > 0 ? REDIS_TIMEOUT : REDIS_UNAVAILABLE);
}

static void
on_unsendable(evutil_socket_t fd, short what, void *arg)
{
    struct redis_batch *b = arg;
    UNUSED(fd);
    UNUSED(what);
    for (int i = 0; i < b->ncmds; i++) {
        b->cmds[i].done = true;
    }
    b->outstanding = 0;
    batch_finish(b, REDIS_UNAVAILABLE);
}

struct redis_batch *
redis_batch_new(struct redis *r)
{
    struct redis_batch *b = xcalloc(1, sizeof(*b));
    b->r = r;
    return b;
}

static struct bcmd *
add_cmd(struct redis_batch *b, int argc)
{
    if (b->ncmds == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 8;
        b->cmds = xrealloc(b->cmds, (size_t)b->cap * sizeof(*b->cmds));
    }
    struct bcmd *c = &b->cmds[b->ncmds];
    memset(c, 0, sizeof(*c));
    c->index = b->ncmds++;
    c->script = -1;
    c->argc = argc;
    c->argv = xcalloc((size_t)argc, sizeof(char *));
    c->lens = xcalloc((size_t)argc, sizeof(size_t));
    return c;
}

static void
set_arg(struct bcmd *c, int i, const char *s, size_t len)
{
    c->argv[i] = xmalloc(len + 1);
    memcpy(c->argv[i], s, len);
    c->argv[i][len] = '\0';
    c->lens[i] = len;
}

void
redis_batch_argv(struct redis_batch *b, int argc, const char **argv, const size_t *lens)
{
    struct bcmd *c = add_cmd(b, argc);
    for (int i = 0; i < argc; i++) {
        set_arg(c, i, argv[i], lens ? lens[i] : strlen(argv[i]));
    }
}

void
redis_batch_cmd(struct redis_batch *b, const char *fmt, ...)
{
    /* Format with hiredis, then split the RESP back into an argument vector we own. */
    char *resp;
    va_list ap;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&resp, fmt, ap);
    va_end(ap);
    if (len < 0) {
        abort();
    }
    const char *p = resp + 1;
    int argc = atoi(p);
    p = strchr(p, '\n') + 1;
    struct bcmd *c = add_cmd(b, argc);
    for (int i = 0; i < argc; i++) {
        size_t n = (size_t)atol(p + 1);
        p = strchr(p, '\n') + 1;
        set_arg(c, i, p, n);
        p += n + 2;
    }
    redisFreeCommand(resp);
}

void
redis_batch_script(struct redis_batch *b, int id, int nkeys, const char **keys, int nargs,
                   const char **args, const size_t *arglens)
{
    struct bcmd *c = add_cmd(b, 3 + nkeys + nargs);
    char nk[16];
    int n = snprintf(nk, sizeof(nk), "%d", nkeys);
    c->script = id;
    set_arg(c, 0, "EVALSHA", 7);
    set_arg(c, 1, b->r->shas[id], 40);
    set_arg(c, 2, nk, (size_t)n);
    for (int i = 0; i < nkeys; i++) {
        set_arg(c, 3 + i, keys[i], strlen(keys[i]));
    }
    for (int i = 0; i < nargs; i++) {
        set_arg(c, 3 + nkeys + i, args[i], arglens ? arglens[i] : strlen(args[i]));
    }
}

/* The node that serves a command now (standalone: the one node). */
struct rnode *
redis_target_node(struct redis *r, const struct bcmd *c)
{
    if (c->ask_node) {
        return c->ask_node;
    }
    if (r->mode == MODE_CLUSTER) {
        if (c->slot >= 0 && r->slot_node[c->slot]) {
            return r->slot_node[c->slot];
        }
        for (size_t i = 0; i < r->nnodes; i++) { /* keyless: any master that is up */
            if (r->nodes[i]->mapped && r->nodes[i]->state == NODE_UP) {
                return r->nodes[i];
            }
        }
        return NULL;
    }
    return r->nnodes ? r->nodes[0] : NULL;
}

/* Sends a command to the node that serves it, or parks it until that node is up. */
void
redis_route(struct bcmd *c)
{
    struct redis *r = c->b->r;
    struct rnode *n = redis_target_node(r, c);
    if (n && n->state == NODE_UP) {
        node_send_cmd(n, c, false);
        c->ask_node = NULL;
        return;
    }
    if (n == NULL) {
        n = r->nodes[0]; /* no map entry yet: wait where the map will come from */
    }
    wait_push(n, c);
    if (n->state == NODE_DOWN && !event_pending(n->retry, EV_TIMEOUT, NULL)) {
        redis_node_connect(n);
    }
    if (r->mode == MODE_CLUSTER) {
        redis_refresh_map(r, false);
    }
}

void
redis_batch_send(struct redis_batch *b, redis_done_fn done, void *arg)
{
    struct redis *r = b->r;
    b->done = done;
    b->arg = arg;
    b->replies = xcalloc((size_t)(b->ncmds ? b->ncmds : 1), sizeof(cJSON *));
    b->outstanding = b->ncmds;
    if (r->freeing) {
        b->outstanding = 0;
        batch_finish(b, REDIS_UNAVAILABLE);
        return;
    }
    /* A server that is down (or failed its last attempt: hung, refusing) answers at once, on
     * the next loop turn, never from inside the caller; one that is coming up for the first
     * time after a clean start or disconnect takes commands parked until it is up. A cluster
     * parks commands for a node that is coming up (after a failover the map moves them). */
    struct rnode *n0 = r->nnodes ? r->nodes[0] : NULL;
    bool sendable =
        r->mode == MODE_CLUSTER ||
        (n0 && (n0->state == NODE_UP || (n0->state != NODE_DOWN && n0->bo.failures == 0)));
    if (b->ncmds == 0 || !sendable) {
        b->timer = event_new(loop_base(r->loop), -1, 0, on_unsendable, b);
        struct timeval zero = {0, 0};
        event_add(b->timer, &zero);
        return;
    }
    b->timer = event_new(loop_base(r->loop), -1, 0, on_batch_deadline, b);
    struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
    event_add(b->timer, &tv);
    for (int i = 0; i < b->ncmds; i++) {
        b->cmds[i].b = b;
        b->cmds[i].slot = r->mode == MODE_CLUSTER ? command_slot(&b->cmds[i]) : -1;
    }
    for (int i = 0; i < b->ncmds; i++) {
        redis_route(&b->cmds[i]);
    }
}

bool
redis_reply_is_error(const cJSON *reply)
{
    return cJSON_IsObject(reply) && cJSON_HasObjectItem(reply, "error");
}

const char *
redis_reply_error(const cJSON *reply)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(reply, "error");
    return cJSON_IsString(e) ? e->valuestring : NULL;
}

/* ---- replies ---- */

/* MOVED, ASK and the transient cluster errors; true if the command was taken care of. */
static bool
handle_cluster_error(struct rnode *n, struct bcmd *c, const redisReply *rep)
{
    struct redis *r = n->r;
    if (c->b->finished) {
        return false;
    }
    struct cluster_redirect rd;
    if (cluster_parse_redirect(rep->str, rep->len, &rd) == 0) {
        if (++c->redirects > MAX_REDIRECTS) {
            return false;
        }
        struct rnode *to = redis_node_get(r, rd.host, rd.port);
        if (to == NULL) {
            return false;
        }
        if (rd.ask) {
            c->ask = true;
            c->ask_node = to;
        } else {
            r->slot_node[rd.slot] = to; /* for now; the refresh brings the whole new map */
            redis_refresh_map(r, false);
        }
        c->in_flight = false;
        redis_route(c);
        return true;
    }
    if (is_error(rep, "TRYAGAIN") || is_error(rep, "CLUSTERDOWN") || is_error(rep, "LOADING") ||
        is_error(rep, "MASTERDOWN") || is_error(rep, "READONLY")) {
        /* A failover or a migration in progress: the map will settle; try again shortly. */
        c->in_flight = false;
        c->retry_at = time_mono_ms() + RETRY_DELAY_MS;
        c->rnext = r->retry_head;
        r->retry_head = c;
        redis_refresh_map(r, false);
        return true;
    }
    return false;
}

static void
on_cmd_reply(struct rnode *n, struct bcmd *c, const redisReply *rep)
{
    if (rep == NULL) {
        cmd_finish_null(c);
        return;
    }
    if (c->script >= 0 && is_error(rep, "NOSCRIPT") && !c->b->finished) {
        node_send_cmd(n, c, true); /* the EVAL's reply lands here again */
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR && n->r->mode == MODE_CLUSTER &&
        handle_cluster_error(n, c, rep)) {
        return;
    }
    if (!c->b->finished) {
        c->b->replies[c->index] = reply_to_json(rep);
    }
    cmd_done(c);
}

void
redis_dispatch(struct rnode *n, struct rreq *q, const redisReply *rep)
{
    if (q->cmd) {
        on_cmd_reply(n, q->cmd, rep);
    } else if (q->fn) {
        q->fn(n, rep, q->arg);
    }
    free(q);
}

/* ---- lifecycle ---- */

struct redis *
redis_new(struct loop *loop, const struct redis_opts *o, char *err, size_t errlen)
{
    struct redis *r = xcalloc(1, sizeof(*r));
    r->loop = loop;
    r->timeout_ms = o->timeout_ms;
    if (redisurl_parse(o->url, &r->url, err, errlen) != 0) {
        free(r);
        return NULL;
    }
    if (r->url.tls) {
        struct tls_files f = {o->tls_ca, o->tls_cert, o->tls_key};
        char why[300];
        if ((r->tls = tls_client_ctx(&f, why, sizeof(why))) == NULL) {
            snprintf(err, errlen, "rediss://: %s", why);
            redisurl_cleanup(&r->url);
            free(r);
            return NULL;
        }
    }
    r->scripts = o->scripts;
    r->nscripts = o->nscripts;
    r->shas = xcalloc(o->nscripts ? o->nscripts : 1, sizeof(*r->shas));
    for (size_t i = 0; i < o->nscripts; i++) {
        sha1_hex(o->scripts[i], r->shas[i]);
    }
    r->map = xcalloc(1, sizeof(*r->map));
    if (r->url.path) {
        r->mode = MODE_STANDALONE; /* a unix socket is never a cluster node */
        redis_node_add(r, "", 0, true);
    } else {
        for (size_t i = 0; i < r->url.nhosts; i++) {
            redis_node_add(r, r->url.hosts[i].host, r->url.hosts[i].port, true);
        }
    }
    r->tick = loop_timer(loop, TICK_MS, true, redis_on_tick, r);
    /* Standalone uses one connection (the first seed, then the next on failure); a cluster
     * learns its masters from whichever seed answers first. */
    redis_node_connect(r->nodes[0]);
    return r;
}

void
redis_free(struct redis *r)
{
    if (r == NULL) {
        return;
    }
    r->freeing = true;
    event_free(r->tick);
    for (size_t i = 0; i < r->nnodes; i++) {
        redis_node_fail(r->nodes[i], "shutting down");
    }
    for (size_t i = 0; i < r->nnodes; i++) {
        struct rnode *n = r->nodes[i];
        while (n->wait_head) { /* parked, never sent */
            struct bcmd *c = n->wait_head;
            redis_wait_unlink(c);
            c->done = true;
            c->b->outstanding--;
            batch_finish(c->b, c->b->sent ? REDIS_TIMEOUT : REDIS_UNAVAILABLE);
        }
    }
    while (r->retry_head) {
        struct bcmd *c = r->retry_head;
        r->retry_head = c->rnext;
        c->done = true;
        c->b->outstanding--;
        batch_finish(c->b, REDIS_TIMEOUT);
    }
    for (size_t i = 0; i < r->nnodes; i++) {
        event_free(r->nodes[i]->retry);
        free(r->nodes[i]);
    }
    if (r->tls) {
        SSL_CTX_free(r->tls);
    }
    free(r->map);
    free(r->shas);
    redisurl_cleanup(&r->url);
    free(r);
}

void
redis_on_ready(struct redis *r, void (*fn)(void *arg), void *arg)
{
    r->ready_fn = fn;
    r->ready_arg = arg;
}
