/* hiredis async on libevent: pipelined batches, EVALSHA with NOSCRIPT reload, reconnect. */
#include "redis.h"

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "loop.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

struct redis {
    struct loop *loop;            /* borrowed */
    redisAsyncContext *ac;        /* current connection or NULL */
    bool connected;               /* connect callback saw success */
    char *host, *password, *path; /* parsed from the URL (owned) */
    int port, db;
    int timeout_ms;
    int backoff_ms;
    struct event *retry;        /* reconnect timer */
    const char *const *scripts; /* borrowed sources */
    char (*shas)[41];           /* hex SHA-1 per script */
    size_t nscripts;
    void (*ready_fn)(void *arg);
    void *ready_arg;
    bool freeing;
};

/* One command of a batch, kept until its reply so a NOSCRIPT can be retried as EVAL. */
struct bcmd {
    struct redis_batch *b; /* owner */
    int index;             /* position in the reply array */
    int script;            /* script id for EVALSHA commands, else -1 */
    int argc;
    char **argv; /* owned copies */
    size_t *lens;
};

struct redis_batch {
    struct redis *r;   /* borrowed */
    struct bcmd *cmds; /* owned */
    int ncmds, cap;
    int outstanding; /* replies not yet received */
    cJSON **replies; /* slot per command */
    redis_done_fn done;
    void *arg;
    struct event *timer; /* deadline */
    bool finished;       /* done has been called */
};

static void connect_now(struct redis *r);
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);

static int
parse_url(struct redis *r, const char *url)
{
    if (strncmp(url, "unix://", 7) == 0) {
        r->path = xstrdup(url + 7);
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        return -1;
    }
    const char *p = url + 8, *at = strchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            r->password = xstrndup(colon + 1, (size_t)(at - colon - 1));
        }
        p = at + 1;
    }
    const char *slash = strchr(p, '/');
    char *hostport = slash ? xstrndup(p, (size_t)(slash - p)) : xstrdup(p);
    if (strchr(hostport, ':') == NULL) {
        char *tmp = xasprintf("%s:6379", hostport);
        free(hostport);
        hostport = tmp;
    }
    int rc = util_parse_hostport(hostport, &r->host, &r->port);
    free(hostport);
    r->db = slash && slash[1] ? atoi(slash + 1) : 0;
    return rc;
}

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

static void
on_retry(evutil_socket_t fd, short what, void *arg)
{
    UNUSED(fd);
    UNUSED(what);
    connect_now(arg);
}

static void
schedule_retry(struct redis *r)
{
    if (r->freeing) {
        return;
    }
    struct timeval tv = {r->backoff_ms / 1000, (r->backoff_ms % 1000) * 1000};
    event_add(r->retry, &tv);
    r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

static void
on_scripts_loaded(int status, cJSON *replies, void *arg)
{
    struct redis *r = arg;
    if (status == REDIS_DONE) {
        log_info("redis_ready", "scripts=%zu", r->nscripts);
        if (r->ready_fn) {
            r->ready_fn(r->ready_arg);
        }
    }
    cJSON_Delete(replies);
}

static void
on_connect(const redisAsyncContext *ac, int status)
{
    struct redis *r = ac->data;
    if (status != REDIS_OK) {
        log_warn("redis_connect_failed", "error=\"%s\"", ac->errstr);
        r->ac = NULL; /* hiredis frees the context after this callback */
        schedule_retry(r);
        return;
    }
    r->connected = true;
    r->backoff_ms = BACKOFF_MIN_MS;
    log_info("redis_connected", "host=%s port=%d db=%d", r->path ? r->path : r->host, r->port,
             r->db);
    struct redis_batch *b = redis_batch_new(r);
    for (size_t i = 0; i < r->nscripts; i++) {
        redis_batch_cmd(b, "SCRIPT LOAD %s", r->scripts[i]);
    }
    redis_batch_send(b, on_scripts_loaded, r);
}

static void
on_disconnect(const redisAsyncContext *ac, int status)
{
    struct redis *r = ac->data;
    bool was = r->connected;
    r->connected = false;
    r->ac = NULL;
    if (!r->freeing && (status != REDIS_OK || was)) {
        log_warn("redis_disconnected", "error=\"%s\"", ac->errstr[0] ? ac->errstr : "closed");
    }
    schedule_retry(r);
}

static void
connect_now(struct redis *r)
{
    redisAsyncContext *ac =
        r->path ? redisAsyncConnectUnix(r->path) : redisAsyncConnect(r->host, r->port);
    if (ac == NULL || ac->err) {
        log_warn("redis_connect_failed", "error=\"%s\"", ac ? ac->errstr : "out of memory");
        if (ac) {
            redisAsyncFree(ac);
        }
        schedule_retry(r);
        return;
    }
    ac->data = r;
    r->ac = ac;
    redisLibeventAttach(ac, loop_base(r->loop));
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* AUTH and SELECT are queued first, so every later command runs authenticated. */
    if (r->password) {
        redisAsyncCommand(ac, NULL, NULL, "AUTH %s", r->password);
    }
    if (r->db != 0) {
        redisAsyncCommand(ac, NULL, NULL, "SELECT %d", r->db);
    }
}

struct redis *
redis_new(struct loop *loop, const char *url, int timeout_ms, const char *const *scripts,
          size_t nscripts)
{
    struct redis *r = xcalloc(1, sizeof(*r));
    r->loop = loop;
    r->timeout_ms = timeout_ms;
    r->backoff_ms = BACKOFF_MIN_MS;
    if (parse_url(r, url) != 0) {
        log_error("redis_bad_url", "hint=\"expected redis://[:password@]host:port/db\"");
        free(r->host);
        free(r->password);
        free(r->path);
        free(r);
        return NULL;
    }
    r->scripts = scripts;
    r->nscripts = nscripts;
    r->shas = xcalloc(nscripts ? nscripts : 1, sizeof(*r->shas));
    for (size_t i = 0; i < nscripts; i++) {
        sha1_hex(scripts[i], r->shas[i]);
    }
    r->retry = event_new(loop_base(loop), -1, 0, on_retry, r);
    connect_now(r);
    return r;
}

void
redis_free(struct redis *r)
{
    if (r == NULL) {
        return;
    }
    r->freeing = true;
    if (r->ac) {
        redisAsyncFree(r->ac); /* pending callbacks run with a NULL reply */
    }
    event_free(r->retry);
    free(r->shas);
    free(r->host);
    if (r->password) {
        util_wipe(r->password, strlen(r->password));
    }
    free(r->password);
    free(r->path);
    free(r);
}

bool
redis_connected(const struct redis *r)
{
    return r->connected;
}

void
redis_on_ready(struct redis *r, void (*fn)(void *arg), void *arg)
{
    r->ready_fn = fn;
    r->ready_arg = arg;
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
    c->b = b;
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

/* Calls done once; frees the batch when no reply is outstanding any more. */
static void
batch_finish(struct redis_batch *b, int status)
{
    if (!b->finished) {
        b->finished = true;
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

static int
send_cmd(struct bcmd *c, bool as_eval)
{
    struct redis *r = c->b->r;
    const char *saved = as_eval ? c->argv[1] : NULL;
    size_t saved_len = as_eval ? c->lens[1] : 0;
    if (as_eval) {
        /* EVAL <body> re-loads the script as a side effect, so later EVALSHAs work again. */
        c->argv[0][0] = '\0';
        c->argv[1] = (char *)r->scripts[c->script];
        c->lens[1] = strlen(r->scripts[c->script]);
    }
    const char *name = as_eval ? "EVAL" : c->argv[0];
    size_t namelen = as_eval ? 4 : c->lens[0];
    const char **argv = xcalloc((size_t)c->argc, sizeof(char *));
    argv[0] = name;
    size_t *lens = xcalloc((size_t)c->argc, sizeof(size_t));
    lens[0] = namelen;
    for (int i = 1; i < c->argc; i++) {
        argv[i] = c->argv[i];
        lens[i] = c->lens[i];
    }
    int rc = redisAsyncCommandArgv(r->ac, on_reply, c, c->argc, argv, lens);
    free(argv);
    free(lens);
    if (as_eval) {
        c->argv[1] = (char *)saved;
        c->lens[1] = saved_len;
        memcpy(c->argv[0], "EVALSHA", 8);
    }
    return rc == REDIS_OK ? 0 : -1;
}

static void
on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct bcmd *c = privdata;
    struct redis_batch *b = c->b;
    redisReply *rep = reply;
    UNUSED(ac);
    if (rep == NULL) { /* the connection went away with this command outstanding */
        b->outstanding--;
        batch_finish(b, REDIS_TIMEOUT);
        return;
    }
    if (c->script >= 0 && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0 &&
        !b->finished && b->r->ac && send_cmd(c, true) == 0) {
        return; /* still outstanding: the EVAL's reply lands here again */
    }
    b->outstanding--;
    if (!b->finished) {
        b->replies[c->index] = reply_to_json(rep);
        if (b->outstanding == 0) {
            batch_finish(b, REDIS_DONE);
            return;
        }
    } else if (b->outstanding == 0) {
        batch_free(b);
    }
}

static void
on_batch_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct redis_batch *b = arg;
    struct redis *r = b->r;
    UNUSED(fd);
    UNUSED(what);
    log_warn("redis_timeout", "commands=%d outstanding=%d", b->ncmds, b->outstanding);
    /* A command that does not answer in time means a sick link: drop it and reconnect. Every
     * outstanding command then completes with a NULL reply, which finishes this batch. */
    if (r->ac) {
        redisAsyncDisconnect(r->ac);
    }
}

static void
on_unavailable(evutil_socket_t fd, short what, void *arg)
{
    struct redis_batch *b = arg;
    UNUSED(fd);
    UNUSED(what);
    batch_finish(b, REDIS_UNAVAILABLE);
}

void
redis_batch_send(struct redis_batch *b, redis_done_fn done, void *arg)
{
    struct redis *r = b->r;
    b->done = done;
    b->arg = arg;
    b->replies = xcalloc((size_t)(b->ncmds ? b->ncmds : 1), sizeof(cJSON *));
    if (!r->connected || r->ac == NULL || b->ncmds == 0) {
        /* Finish on the next loop turn: callers never see their callback run re-entrantly. */
        b->timer = event_new(loop_base(r->loop), -1, 0, on_unavailable, b);
        struct timeval zero = {0, 0};
        event_add(b->timer, &zero);
        return;
    }
    for (int i = 0; i < b->ncmds; i++) {
        if (send_cmd(&b->cmds[i], false) != 0) {
            break;
        }
        b->outstanding++;
    }
    b->timer = event_new(loop_base(r->loop), -1, 0, on_batch_timeout, b);
    struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
    event_add(b->timer, &tv);
    if (b->outstanding < b->ncmds && b->outstanding == 0) {
        event_del(b->timer);
        batch_finish(b, REDIS_UNAVAILABLE);
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
