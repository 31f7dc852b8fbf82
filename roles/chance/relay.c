/*
 * The chance role's audit relay: a thread with its own synchronous hiredis connection that
 * reads the event streams, publishes each entry to RabbitMQ in confirm mode, and deletes an
 * entry (XDEL) only after the broker confirmed it. Claims never wait for it: when RabbitMQ or
 * the relay is down, events simply stay in the streams. At-least-once: an entry published but
 * not yet deleted when the relay dies is published again, and the logger stores it once
 * (event _id is the MongoDB _id).
 */
#include "relay.h"

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "chance_conf.h"
#include "rmq_conf.h"
#include "log.h"
#include "rabbit.h"
#include "util.h"

#define GLOBAL_STREAM "chance:{g}:events"
#define CATEGORY_SET "chance:categories"
#define CHUNK_KEYS 64    /* streams per XREAD */
#define BLOCK_MS_MAX 500 /* XREAD BLOCK when idle (bounded by redis_timeout_ms / 2) */
#define IDLE_NAP_MS 50   /* pause between sweeps when there are too many streams to block */
#define CONFIRM_TIMEOUT_MS 10000
#define LIST_CHECK_MS 1000    /* how often ZCARD checks for new categories */
#define LIST_REFRESH_MS 30000 /* full re-read of the category list regardless */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define LOG_REPEAT_MS 30000
#define STOP_GRACE_MS 3000 /* relay_free waits this long before interrupting sockets */

struct entry {
    size_t stream;   /* index in relay->streams */
    char id[48];     /* stream entry id "ms-seq" */
    char *body;      /* owned message body */
    size_t len;      /* its length */
    char msgid[201]; /* message_id: the event _id (<= 200 bytes), else "stream/id" */
};

struct redis_target {
    char *host; /* owned; NULL for a unix socket */
    int port;
    char *path;     /* owned unix socket path, or NULL */
    char *user;     /* owned ACL user, or NULL */
    char *password; /* owned, or NULL */
    int db;
};

struct relay {
    const struct chance_conf *conf; /* borrowed */
    const struct rmq_conf *rmq;     /* borrowed */
    pthread_t thread;
    int stop;                     /* atomic: relay_free asks the thread to end */
    int exited;                   /* atomic: the thread has returned */
    int connected;                /* atomic: RabbitMQ link up */
    unsigned long long published; /* atomic: confirmed and deleted from Redis */
    pthread_mutex_t lock;         /* guards mq and rfd against relay_free's interrupt */
    struct chance_amqp *mq;       /* thread-owned link, NULL while down */
    int rfd;                      /* Redis socket, -1 while down */
    /* The rest belongs to the thread. */
    redisContext *redis;        /* synchronous connection, NULL while down */
    struct redis_target target; /* parsed redis_url */
    char **streams;             /* stream keys: GLOBAL_STREAM, then one per category */
    size_t nstreams;
    long long zcard;               /* category count when the list was built */
    int64_t checked_at, listed_at; /* monotonic ms of the last ZCARD / ZRANGE */
    bool *hot;                     /* per stream: non-empty in the last discovery */
    struct entry *entries;         /* the round being published */
    size_t nentries, capentries;
    bool *confirmed;     /* per entry, from the broker */
    bool idle;           /* the last round found nothing */
    int backoff_ms;      /* next wait after a failure */
    char last_err[256];  /* last failure logged */
    int64_t last_err_at; /* and when */
};

static bool
stopping(struct relay *r)
{
    return __atomic_load_n(&r->stop, __ATOMIC_ACQUIRE) != 0;
}

static void
nap(struct relay *r, int ms)
{
    while (ms > 0 && !stopping(r)) {
        int step = ms < 50 ? ms : 50;
        struct timespec ts = {0, (long)step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

static void
backoff(struct relay *r)
{
    nap(r, r->backoff_ms);
    r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

static void
log_failure(struct relay *r, const char *event, const char *why)
{
    int64_t now = time_mono_ms();
    if (strcmp(r->last_err, why) != 0 || now - r->last_err_at >= LOG_REPEAT_MS) {
        log_warn(event, "reason=\"%s\" retry_ms=%d", why, r->backoff_ms);
        snprintf(r->last_err, sizeof(r->last_err), "%s", why);
        r->last_err_at = now;
    }
}

/* ---- Redis ---- */

/* "redis://[[user]:password@]host[:port][/db]" or "unix:///path[?db=N]". */
static int
parse_redis_url(const char *url, struct redis_target *t)
{
    memset(t, 0, sizeof(*t));
    t->port = 6379;
    if (strncmp(url, "unix://", 7) == 0) {
        const char *q = strchr(url + 7, '?');
        t->path = q ? xstrndup(url + 7, (size_t)(q - url - 7)) : xstrdup(url + 7);
        if (q && strncmp(q, "?db=", 4) == 0) {
            t->db = atoi(q + 4);
        }
        return *t->path ? 0 : -1;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        return -1;
    }
    const char *p = url + 8, *slash = strchr(p, '/'), *at = strrchr(p, '@');
    if (at && slash && at > slash) {
        at = NULL;
    }
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            t->user = colon > p ? xstrndup(p, (size_t)(colon - p)) : NULL;
            t->password = xstrndup(colon + 1, (size_t)(at - colon - 1));
        } else {
            t->password = xstrndup(p, (size_t)(at - p));
        }
        p = at + 1;
    }
    char *hostport = slash ? xstrndup(p, (size_t)(slash - p)) : xstrdup(p);
    if (strchr(hostport, ':') == NULL) {
        char *with = xasprintf("%s:6379", hostport);
        free(hostport);
        hostport = with;
    }
    int rc = util_parse_hostport(hostport, &t->host, &t->port);
    free(hostport);
    if (slash && slash[1]) {
        t->db = atoi(slash + 1);
    }
    return rc;
}

static void
target_cleanup(struct redis_target *t)
{
    free(t->host);
    free(t->path);
    free(t->user);
    if (t->password) {
        util_wipe(t->password, strlen(t->password));
    }
    free(t->password);
}

static bool
reply_ok(redisContext *c, redisReply *rep, char *err, size_t errlen)
{
    if (rep == NULL) {
        snprintf(err, errlen, "redis: %s", c->errstr[0] ? c->errstr : "connection lost");
        return false;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "redis: %.200s", rep->str);
        return false;
    }
    return true;
}

static void
drop_redis(struct relay *r)
{
    pthread_mutex_lock(&r->lock);
    r->rfd = -1;
    pthread_mutex_unlock(&r->lock);
    if (r->redis) {
        redisFree(r->redis);
        r->redis = NULL;
    }
}

/* A simple command with a status or integer reply; -1 with err. */
static int
command(struct relay *r, int argc, const char **argv, long long *out, char *err, size_t errlen)
{
    redisReply *rep = redisCommandArgv(r->redis, argc, argv, NULL);
    bool ok = reply_ok(r->redis, rep, err, errlen);
    if (ok && out) {
        *out = rep->type == REDIS_REPLY_INTEGER ? rep->integer : 0;
    }
    freeReplyObject(rep);
    return ok ? 0 : -1;
}

static int
connect_redis(struct relay *r, char *err, size_t errlen)
{
    int ms = (int)r->conf->redis_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    redisContext *c = r->target.path ? redisConnectUnixWithTimeout(r->target.path, tv)
                                     : redisConnectWithTimeout(r->target.host, r->target.port, tv);
    if (c == NULL || c->err) {
        snprintf(err, errlen, "redis: %s", c ? c->errstr : "out of memory");
        redisFree(c);
        return -1;
    }
    redisSetTimeout(c, tv);
    r->redis = c;
    pthread_mutex_lock(&r->lock);
    r->rfd = c->fd;
    pthread_mutex_unlock(&r->lock);
    char db[16];
    snprintf(db, sizeof(db), "%d", r->target.db);
    const char *auth1[] = {"AUTH", r->target.password};
    const char *auth2[] = {"AUTH", r->target.user, r->target.password};
    const char *sel[] = {"SELECT", db};
    if ((r->target.password && r->target.user && command(r, 3, auth2, NULL, err, errlen) != 0) ||
        (r->target.password && !r->target.user && command(r, 2, auth1, NULL, err, errlen) != 0) ||
        command(r, 2, sel, NULL, err, errlen) != 0) {
        drop_redis(r);
        return -1;
    }
    return 0;
}

/* ---- the stream list ---- */

static void
free_streams(struct relay *r)
{
    for (size_t i = 0; i < r->nstreams; i++) {
        free(r->streams[i]);
    }
    free(r->streams);
    free(r->hot);
    r->streams = NULL;
    r->hot = NULL;
    r->nstreams = 0;
}

static int
list_streams(struct relay *r, char *err, size_t errlen)
{
    const char *argv[] = {"ZRANGE", CATEGORY_SET, "0", "-1"};
    redisReply *rep = redisCommandArgv(r->redis, 4, argv, NULL);
    if (!reply_ok(r->redis, rep, err, errlen) || rep->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(rep);
        return -1;
    }
    free_streams(r);
    r->streams = xcalloc(rep->elements + 1, sizeof(char *));
    r->hot = xcalloc(rep->elements + 1, sizeof(bool));
    r->streams[r->nstreams++] = xstrdup(GLOBAL_STREAM);
    for (size_t i = 0; i < rep->elements; i++) {
        if (rep->element[i]->type == REDIS_REPLY_STRING) {
            r->streams[r->nstreams++] = xasprintf("chance:{c%s}:events", rep->element[i]->str);
        }
    }
    r->zcard = (long long)rep->elements;
    r->listed_at = r->checked_at = time_mono_ms();
    freeReplyObject(rep);
    return 0;
}

/* Re-lists when categories were added (ZCARD changed), when asked, or every LIST_REFRESH_MS. */
static int
refresh_streams(struct relay *r, bool force, char *err, size_t errlen)
{
    int64_t now = time_mono_ms();
    if (!force && r->streams && now - r->checked_at < LIST_CHECK_MS) {
        return 0;
    }
    long long n = 0;
    const char *argv[] = {"ZCARD", CATEGORY_SET};
    if (command(r, 2, argv, &n, err, errlen) != 0) {
        return -1;
    }
    r->checked_at = now;
    if (force || !r->streams || n != r->zcard || now - r->listed_at >= LIST_REFRESH_MS) {
        return list_streams(r, err, errlen);
    }
    return 0;
}

/* ---- reading a round ---- */

/* The body the logger expects: the NestJS RMQ event shape around the event as written. */
static void
add_entry(struct relay *r, size_t stream, const redisReply *item)
{
    if (item->type != REDIS_REPLY_ARRAY || item->elements != 2 ||
        item->element[0]->type != REDIS_REPLY_STRING) {
        return;
    }
    const char *event = NULL;
    const redisReply *fields = item->element[1];
    for (size_t i = 0; fields->type == REDIS_REPLY_ARRAY && i + 1 < fields->elements; i += 2) {
        if (fields->element[i]->type == REDIS_REPLY_STRING &&
            strcmp(fields->element[i]->str, "e") == 0 &&
            fields->element[i + 1]->type == REDIS_REPLY_STRING) {
            event = fields->element[i + 1]->str;
        }
    }
    if (r->nentries == r->capentries) {
        r->capentries = r->capentries ? r->capentries * 2 : 256;
        r->entries = xrealloc(r->entries, r->capentries * sizeof(*r->entries));
        r->confirmed = xrealloc(r->confirmed, r->capentries * sizeof(*r->confirmed));
    }
    struct entry *e = &r->entries[r->nentries++];
    e->stream = stream;
    snprintf(e->id, sizeof(e->id), "%s", item->element[0]->str);
    /* An entry that is not an event is still published: the logger dead-letters and counts it,
     * which beats blocking the stream or dropping it silently. */
    e->body =
        xasprintf("{\"pattern\":{\"cmd\":\"log.event\"},\"data\":%s}", event ? event : "null");
    e->len = strlen(e->body);
    cJSON *parsed = event ? cJSON_Parse(event) : NULL;
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(parsed, "_id");
    if (cJSON_IsString(id) && strlen(id->valuestring) < sizeof(e->msgid)) {
        snprintf(e->msgid, sizeof(e->msgid), "%s", id->valuestring);
    } else {
        snprintf(e->msgid, sizeof(e->msgid), "%.150s/%s", r->streams[stream], e->id);
    }
    cJSON_Delete(parsed);
}

static void
clear_entries(struct relay *r)
{
    for (size_t i = 0; i < r->nentries; i++) {
        free(r->entries[i].body);
    }
    r->nentries = 0;
}

static size_t
stream_index(struct relay *r, const char *key, const size_t *idx, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(r->streams[idx[i]], key) == 0) {
            return idx[i];
        }
    }
    return SIZE_MAX;
}

/*
 * XREAD COUNT count [BLOCK block_ms] STREAMS keys... 0...: from the head of each stream, which
 * holds exactly the entries not confirmed yet. With collect, entries are added to the round;
 * without, the streams that have any are marked hot.
 */
static int
xread(struct relay *r, const size_t *idx, size_t n, long long count, int block_ms, bool collect,
      char *err, size_t errlen)
{
    const char **argv = xcalloc(6 + 2 * n, sizeof(char *));
    char cnt[24], blk[24];
    int argc = 0;
    snprintf(cnt, sizeof(cnt), "%lld", count);
    snprintf(blk, sizeof(blk), "%d", block_ms);
    argv[argc++] = "XREAD";
    argv[argc++] = "COUNT";
    argv[argc++] = cnt;
    if (block_ms > 0) {
        argv[argc++] = "BLOCK";
        argv[argc++] = blk;
    }
    argv[argc++] = "STREAMS";
    for (size_t i = 0; i < n; i++) {
        argv[argc + (int)i] = r->streams[idx[i]];
        argv[argc + (int)(n + i)] = "0";
    }
    argc += 2 * (int)n;
    redisReply *rep = redisCommandArgv(r->redis, argc, argv, NULL);
    free(argv);
    if (!reply_ok(r->redis, rep, err, errlen)) {
        freeReplyObject(rep);
        return -1;
    }
    for (size_t i = 0; rep->type == REDIS_REPLY_ARRAY && i < rep->elements; i++) {
        const redisReply *s = rep->element[i];
        if (s->type != REDIS_REPLY_ARRAY || s->elements != 2 ||
            s->element[0]->type != REDIS_REPLY_STRING) {
            continue;
        }
        size_t k = stream_index(r, s->element[0]->str, idx, n);
        if (k == SIZE_MAX || s->element[1]->type != REDIS_REPLY_ARRAY) {
            continue;
        }
        r->hot[k] = s->element[1]->elements > 0;
        for (size_t j = 0; collect && j < s->element[1]->elements; j++) {
            add_entry(r, k, s->element[1]->element[j]);
        }
    }
    freeReplyObject(rep);
    return 0;
}

/*
 * Finds which streams hold entries (one entry each, blocking when idle and all streams fit in
 * one XREAD), then reads up to relay_batch entries shared among them.
 */
static int
read_round(struct relay *r, char *err, size_t errlen)
{
    size_t *idx = xcalloc(r->nstreams, sizeof(size_t)), nhot = 0;
    int block = 0, rc = -1;
    if (r->idle && r->nstreams <= CHUNK_KEYS) {
        block = r->conf->redis_timeout_ms / 2 < BLOCK_MS_MAX ? (int)r->conf->redis_timeout_ms / 2
                                                             : BLOCK_MS_MAX;
    }
    for (size_t from = 0; from < r->nstreams; from += CHUNK_KEYS) {
        size_t n = r->nstreams - from < CHUNK_KEYS ? r->nstreams - from : CHUNK_KEYS;
        for (size_t i = 0; i < n; i++) {
            idx[i] = from + i;
            r->hot[from + i] = false;
        }
        if (xread(r, idx, n, 1, block, false, err, errlen) != 0) {
            goto out;
        }
    }
    for (size_t i = 0; i < r->nstreams; i++) {
        if (r->hot[i]) {
            idx[nhot++] = i;
        }
    }
    long long per = nhot ? r->conf->relay_batch / (long long)nhot : 0;
    for (size_t from = 0; from < nhot; from += CHUNK_KEYS) {
        size_t n = nhot - from < CHUNK_KEYS ? nhot - from : CHUNK_KEYS;
        if (xread(r, idx + from, n, per > 0 ? per : 1, 0, true, err, errlen) != 0) {
            goto out;
        }
    }
    rc = 0;
out:
    free(idx);
    return rc;
}

/* XDEL the confirmed entries, one command per stream, pipelined. */
static int
delete_confirmed(struct relay *r, size_t *deleted, char *err, size_t errlen)
{
    const char **argv = xcalloc(r->nentries + 2, sizeof(char *));
    size_t ncmds = 0;
    *deleted = 0;
    bool *done = xcalloc(r->nentries ? r->nentries : 1, sizeof(bool));
    for (size_t i = 0; i < r->nentries; i++) {
        if (done[i] || !r->confirmed[i]) {
            continue;
        }
        int argc = 0;
        argv[argc++] = "XDEL";
        argv[argc++] = r->streams[r->entries[i].stream];
        for (size_t j = i; j < r->nentries; j++) {
            if (!done[j] && r->confirmed[j] && r->entries[j].stream == r->entries[i].stream) {
                argv[argc++] = r->entries[j].id;
                done[j] = true;
            }
        }
        redisAppendCommandArgv(r->redis, argc, argv, NULL);
        ncmds++;
    }
    int rc = 0;
    for (size_t c = 0; c < ncmds; c++) {
        redisReply *rep = NULL;
        if (redisGetReply(r->redis, (void **)&rep) != REDIS_OK ||
            !reply_ok(r->redis, rep, err, errlen)) {
            rc = -1;
        } else if (rep->type == REDIS_REPLY_INTEGER) {
            *deleted += (size_t)rep->integer;
        }
        freeReplyObject(rep);
        if (rc != 0) {
            break;
        }
    }
    free(done);
    free(argv);
    return rc;
}

/* ---- publishing ---- */

static void
set_link(struct relay *r, struct chance_amqp *mq)
{
    pthread_mutex_lock(&r->lock);
    struct chance_amqp *old = r->mq;
    r->mq = mq;
    pthread_mutex_unlock(&r->lock);
    chance_amqp_close(old);
    __atomic_store_n(&r->connected, mq != NULL, __ATOMIC_RELAXED);
}

static int
connect_amqp(struct relay *r, char *err, size_t errlen)
{
    struct chance_amqp *mq = chance_amqp_open(r->rmq->amqp_url, r->rmq->amqp_queue,
                                              (int)r->rmq->amqp_delivery_limit, 10000, err, errlen);
    if (mq == NULL) {
        return -1;
    }
    set_link(r, mq);
    log_info("relay_connected", "queue=%s delivery_limit=%lld batch=%lld", r->rmq->amqp_queue,
             r->rmq->amqp_delivery_limit, r->conf->relay_batch);
    return 0;
}

/*
 * Publishes the round and waits for its confirms, then deletes what was confirmed. Returns 0,
 * or -1 with err when the link failed (what was confirmed before the failure is still deleted).
 * *unconfirmed counts entries left in Redis for the next round.
 */
static int
publish_round(struct relay *r, size_t *unconfirmed, char *err, size_t errlen)
{
    int rc = 0;
    size_t sent = 0, deleted = 0;
    for (; sent < r->nentries; sent++) {
        struct entry *e = &r->entries[sent];
        if (chance_amqp_publish(r->mq, e->body, e->len, e->msgid, err, errlen) != 0) {
            rc = -1;
            break;
        }
    }
    memset(r->confirmed, 0, r->nentries * sizeof(bool));
    char why[256] = "";
    if (chance_amqp_confirm(r->mq, CONFIRM_TIMEOUT_MS, r->confirmed, why, sizeof(why)) != 0 &&
        rc == 0) {
        snprintf(err, errlen, "%s", why);
        rc = -1;
    }
    for (size_t i = sent; i < r->nentries; i++) {
        r->confirmed[i] = false; /* never left this process */
    }
    char rerr[256];
    if (delete_confirmed(r, &deleted, rerr, sizeof(rerr)) != 0) {
        /* Confirmed but still in Redis: published again later; the logger dedups by _id. */
        log_warn("relay_trim_failed", "reason=\"%s\"", rerr);
        drop_redis(r);
    }
    size_t ok = 0;
    for (size_t i = 0; i < r->nentries; i++) {
        ok += r->confirmed[i];
    }
    __atomic_add_fetch(&r->published, (unsigned long long)ok, __ATOMIC_RELAXED);
    *unconfirmed = r->nentries - ok;
    log_debug("relay_round", "events=%zu confirmed=%zu trimmed=%zu", r->nentries, ok, deleted);
    return rc;
}

/* One iteration of the thread: make sure both links are up, then move one round. */
static void
step(struct relay *r)
{
    char err[256];
    if (r->redis == NULL && connect_redis(r, err, sizeof(err)) != 0) {
        log_failure(r, "relay_redis_unavailable", err);
        backoff(r);
        return;
    }
    if (r->mq == NULL && connect_amqp(r, err, sizeof(err)) != 0) {
        log_failure(r, "relay_amqp_unavailable", err);
        backoff(r);
        return;
    }
    bool force = r->nstreams > 0 && r->hot[0]; /* a batch event: new categories exist */
    clear_entries(r);
    if (refresh_streams(r, force, err, sizeof(err)) != 0 || read_round(r, err, sizeof(err)) != 0) {
        log_failure(r, "relay_redis_failed", err);
        drop_redis(r);
        backoff(r);
        return;
    }
    r->idle = r->nentries == 0;
    if (r->idle) {
        /* Nothing to publish: still read the link for heartbeats and a close from the broker. */
        if (chance_amqp_confirm(r->mq, 0, r->confirmed, err, sizeof(err)) != 0) {
            log_failure(r, "relay_amqp_failed", err);
            set_link(r, NULL);
        } else if (r->nstreams > CHUNK_KEYS) {
            nap(r, IDLE_NAP_MS); /* too many streams to block on: poll */
        }
        return;
    }
    size_t unconfirmed = 0;
    if (publish_round(r, &unconfirmed, err, sizeof(err)) != 0) {
        log_failure(r, "relay_amqp_failed", err);
        set_link(r, NULL);
        backoff(r);
    } else if (unconfirmed > 0) {
        log_failure(r, "relay_nacked", "the broker did not confirm every message");
        backoff(r);
    } else {
        r->backoff_ms = BACKOFF_MIN_MS;
        r->last_err[0] = '\0';
    }
    clear_entries(r);
}

static void *
relay_main(void *arg)
{
    struct relay *r = arg;
    log_set_role("chance");
    r->backoff_ms = BACKOFF_MIN_MS;
    r->idle = true;
    while (!stopping(r)) {
        step(r);
    }
    set_link(r, NULL);
    drop_redis(r);
    __atomic_store_n(&r->exited, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* ---- public ---- */

struct relay *
relay_new(const struct chance_conf *conf, const struct rmq_conf *rmq)
{
    struct relay *r = xcalloc(1, sizeof(*r));
    r->conf = conf;
    r->rmq = rmq;
    r->rfd = -1;
    pthread_mutex_init(&r->lock, NULL);
    if (parse_redis_url(conf->redis_url, &r->target) != 0) {
        log_error("relay_bad_redis_url",
                  "hint=\"expected redis://[[user]:password@]host:port/db\"");
        goto fail;
    }
    if (pthread_create(&r->thread, NULL, relay_main, r) != 0) {
        log_error("thread_failed", "what=relay");
        goto fail;
    }
    return r;
fail:
    target_cleanup(&r->target);
    pthread_mutex_destroy(&r->lock);
    free(r);
    return NULL;
}

void
relay_free(struct relay *r)
{
    if (r == NULL) {
        return;
    }
    __atomic_store_n(&r->stop, 1, __ATOMIC_RELEASE);
    /* The round in hand finishes (bounded by the confirm timeout); a socket stuck on a stalled
     * peer is shut down after a grace period so the join cannot hang. */
    int64_t deadline = time_mono_ms() + STOP_GRACE_MS;
    while (!__atomic_load_n(&r->exited, __ATOMIC_ACQUIRE) && time_mono_ms() < deadline) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (!__atomic_load_n(&r->exited, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&r->lock);
        if (r->mq) {
            chance_amqp_interrupt(r->mq);
        }
        if (r->rfd >= 0) {
            shutdown(r->rfd, SHUT_RDWR);
        }
        pthread_mutex_unlock(&r->lock);
    }
    pthread_join(r->thread, NULL);
    log_info("relay_stopped", "published=%llu", relay_published(r));
    clear_entries(r);
    free(r->entries);
    free(r->confirmed);
    free_streams(r);
    target_cleanup(&r->target);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

bool
relay_connected(const struct relay *r)
{
    return __atomic_load_n(&r->connected, __ATOMIC_RELAXED) != 0;
}

unsigned long long
relay_published(const struct relay *r)
{
    return __atomic_load_n(&r->published, __ATOMIC_RELAXED);
}
