/* The chance role's audit relay, loop side (relay.h): consumer-group reads, acks, takeover. */
#include "relay.h"

#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "chance.h"
#include "failpoint.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "publisher.h"
#include "redis.h"
#include "rmq_conf.h"

#define GROUP "relay"
#define GLOBAL_STREAM "chance:{g}:events"
#define READ_STREAMS_MAX 64 /* streams read per Redis batch */
/* A touch is read this soon; the touches meanwhile join it. At 1,000 claims/s, 5 ms gathers
 * about five events per read and message where 1 ms gathered one or two: fewer Redis reads,
 * acks, AMQP messages and logger inserts per event, for at most 5 ms more audit lag (the lag
 * p99 at 1,000 events/s measured 15 ms with it, make bench). */
#define KICK_DELAY_US 5000
#define RETRY_MS 1000     /* unconfirmed messages are handed to the publisher again after */
#define HELD_FACTOR 8     /* hold at most this many relay_batch of unconfirmed entries */
#define HELD_BUCKETS 4096 /* hash buckets of the entries in hand */
/* Events packed into one log.events message: one publish, route, delivery, ack and confirm for
 * many events (RabbitMQ's cost per message was about Redis's per claim). The byte bound keeps
 * a message well under the logger's max_event_bytes (64 KiB by default). */
#define MSG_EVENTS_MAX 100
#define MSG_BYTES_MAX (48 * 1024)

struct held_entry;

struct relay_stream {
    long long category;        /* 0: the global stream */
    char key[KEY_MAX];         /* the stream's key */
    bool group;                /* the consumer group is known to exist */
    bool dirty;                /* read soon */
    bool reading;              /* a read is in flight */
    struct relay_stream *next; /* dirty-list link */
};

struct relay {
    struct loop *loop;              /* borrowed */
    struct redis *redis;            /* borrowed: the role's client */
    struct metrics *metrics;        /* borrowed */
    const struct chance_conf *conf; /* borrowed */
    struct publisher *pub;          /* owned */
    char consumer[96];              /* this instance's name in the groups */
    struct relay_stream **streams;  /* owned, sorted by category */
    size_t nstreams, cap;
    struct relay_stream *dirty;   /* streams to read */
    struct event *kick;           /* reads the dirty streams */
    struct event *sweep;          /* periodic: every stream, and takeover */
    struct event *retry;          /* hands unconfirmed messages back to the publisher */
    struct pub_item *unconfirmed; /* waiting for retry */
    long long held;               /* messages read and not yet acknowledged */
    int64_t claimed_ms;           /* last XAUTOCLAIM pass */
    bool listing;                 /* a ZRANGE of categories in flight */
    struct held_entry *held_set[HELD_BUCKETS]; /* entries in hand, by stream and id */
};

static void read_dirty(struct relay *r);

/* ---- entries in hand ---- */

/*
 * The entries this instance read and has not acknowledged yet. A takeover pass (XAUTOCLAIM)
 * can hand us our own entries back when the broker held them long; this set keeps one copy.
 */
struct held_entry {
    const struct relay_stream *stream; /* which stream */
    char id[48];                       /* its entry id */
    struct held_entry *next;           /* bucket chain */
};

static size_t
held_bucket(const struct relay_stream *s, const char *id)
{
    size_t h = (size_t)(uintptr_t)s * 31u;
    for (const char *p = id; *p; p++) {
        h = h * 131u + (unsigned char)*p;
    }
    return h % HELD_BUCKETS;
}

/* Adds an entry; false if it was already held. */
static bool
held_add(struct relay *r, const struct relay_stream *s, const char *id)
{
    size_t b = held_bucket(s, id);
    for (struct held_entry *e = r->held_set[b]; e; e = e->next) {
        if (e->stream == s && strcmp(e->id, id) == 0) {
            return false;
        }
    }
    struct held_entry *e = xcalloc(1, sizeof(*e));
    e->stream = s;
    snprintf(e->id, sizeof(e->id), "%s", id);
    e->next = r->held_set[b];
    r->held_set[b] = e;
    return true;
}

static void
held_remove(struct relay *r, const struct relay_stream *s, const char *id)
{
    for (struct held_entry **p = &r->held_set[held_bucket(s, id)]; *p; p = &(*p)->next) {
        if ((*p)->stream == s && strcmp((*p)->id, id) == 0) {
            struct held_entry *e = *p;
            *p = e->next;
            free(e);
            return;
        }
    }
}

/* ---- streams ---- */

static struct relay_stream *
stream_get(struct relay *r, long long category)
{
    size_t lo = 0, hi = r->nstreams;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (r->streams[mid]->category < category) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo < r->nstreams && r->streams[lo]->category == category) {
        return r->streams[lo];
    }
    if (r->nstreams == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->streams = xrealloc(r->streams, r->cap * sizeof(*r->streams));
    }
    memmove(&r->streams[lo + 1], &r->streams[lo], (r->nstreams - lo) * sizeof(*r->streams));
    struct relay_stream *s = xcalloc(1, sizeof(*s));
    s->category = category;
    if (category == 0) {
        snprintf(s->key, sizeof(s->key), "%s", GLOBAL_STREAM);
    } else {
        chance_key(s->key, category, "events");
    }
    r->streams[lo] = s;
    r->nstreams++;
    return s;
}

static void
mark_dirty(struct relay *r, struct relay_stream *s)
{
    if (!s->dirty) {
        s->dirty = true;
        s->next = r->dirty;
        r->dirty = s;
    }
}

static void
schedule_kick(struct relay *r)
{
    if (!event_pending(r->kick, EV_TIMEOUT, NULL)) {
        struct timeval tv = {0, KICK_DELAY_US};
        event_add(r->kick, &tv);
    }
}

void
relay_touch(struct relay *r, long long category)
{
    if (r == NULL) {
        return;
    }
    mark_dirty(r, stream_get(r, category));
    schedule_kick(r);
}

/* ---- entries -> messages ---- */

/* The event of a stream entry [id, [field, value, ...]] (its "e" field), or NULL. */
static const char *
entry_event(const cJSON *e)
{
    const cJSON *fields = cJSON_GetArrayItem(e, 1);
    const char *event = NULL;
    for (const cJSON *f = cJSON_IsArray(fields) ? fields->child : NULL; f && f->next;
         f = f->next->next) {
        if (cJSON_IsString(f) && strcmp(f->valuestring, "e") == 0 && cJSON_IsString(f->next)) {
            event = f->next->valuestring;
        }
    }
    return event;
}

/* The _id of an event's text into out, or false if the text is no object with a string _id
 * (or has anything after the object: spliced into a batch it would spoil the whole message). */
static bool
event_id(const char *event, char *out, size_t size)
{
    cJSON *parsed = event ? cJSON_ParseWithOpts(event, NULL, true) : NULL;
    const cJSON *eid = cJSON_GetObjectItemCaseSensitive(parsed, "_id");
    bool ok = cJSON_IsObject(parsed) && cJSON_IsString(eid) && strlen(eid->valuestring) < size;
    if (ok) {
        snprintf(out, size, "%s", eid->valuestring);
    }
    cJSON_Delete(parsed);
    return ok;
}

/* A message being filled with the events of the entries of one read (of one or more
 * streams). */
struct pack {
    struct pub_item *it;    /* being filled, or NULL */
    struct sbuf body;       /* its body so far */
    size_t first;           /* where the first event starts in body */
    struct pub_item *done;  /* finished messages, in stream order */
    struct pub_item **tail; /* where the next one goes */
};

static void
pack_put(struct pack *pk, struct pub_item *it)
{
    it->next = NULL;
    *pk->tail = it;
    pk->tail = &it->next;
}

/* Finishes the message being filled (a lone event goes as log.event). */
static void
pack_close(struct pack *pk)
{
    struct pub_item *it = pk->it;
    if (it == NULL) {
        return;
    }
    if (it->nentries == 1) {
        it->body = xasprintf("{\"pattern\":{\"cmd\":\"log.event\"},\"data\":%s}",
                             pk->body.data + pk->first);
    } else {
        sbuf_appends(&pk->body, "]}}");
        it->body = sbuf_steal(&pk->body);
        size_t n = strlen(it->msgid);
        snprintf(it->msgid + n, sizeof(it->msgid) - n, "+%d", it->nentries - 1);
    }
    it->len = strlen(it->body);
    sbuf_cleanup(&pk->body);
    pack_put(pk, it);
    pk->it = NULL;
}

static void
item_add(struct pub_item *it, struct relay_stream *s, const char *entry)
{
    it->entries = xrealloc(it->entries, (size_t)(it->nentries + 1) * sizeof(*it->entries));
    it->entries[it->nentries].stream = s;
    snprintf(it->entries[it->nentries].id, sizeof(it->entries[0].id), "%s", entry);
    it->nentries++;
}

static struct pub_item *
item_new(struct relay_stream *s, const char *entry)
{
    struct pub_item *it = xcalloc(1, sizeof(*it));
    item_add(it, s, entry);
    return it;
}

/*
 * Adds one entry to the messages. An event (a JSON object with a string _id) joins the message
 * being filled, up to MSG_EVENTS_MAX events and MSG_BYTES_MAX bytes. Anything else goes alone,
 * as a log.event the logger dead-letters and counts (which beats blocking the stream or
 * dropping it silently), so it never takes valid events with it.
 */
static void
pack_entry(struct pack *pk, struct relay_stream *s, const char *entry, const char *event)
{
    char id[sizeof(((struct pub_item *)0)->msgid)];
    if (!event_id(event, id, sizeof(id))) {
        pack_close(pk);
        struct pub_item *it = item_new(s, entry);
        it->body =
            xasprintf("{\"pattern\":{\"cmd\":\"log.event\"},\"data\":%s}", event ? event : "null");
        it->len = strlen(it->body);
        snprintf(it->msgid, sizeof(it->msgid), "%.150s/%s", s->key, entry);
        pack_put(pk, it);
        return;
    }
    if (pk->it &&
        (pk->it->nentries == MSG_EVENTS_MAX || pk->body.len + strlen(event) + 4 > MSG_BYTES_MAX)) {
        pack_close(pk);
    }
    if (pk->it == NULL) {
        pk->it = item_new(s, entry);
        snprintf(pk->it->msgid, sizeof(pk->it->msgid), "%s", id);
        sbuf_appends(&pk->body, "{\"pattern\":{\"cmd\":\"log.events\"},\"data\":{\"events\":[");
        pk->first = pk->body.len;
    } else {
        item_add(pk->it, s, entry);
        sbuf_appends(&pk->body, ",");
    }
    sbuf_appends(&pk->body, event);
}

/* Packs the entries of a list [[id, fields], ...] not already in hand, in stream order;
 * returns how many entries. */
static long long
collect(struct relay *r, struct relay_stream *s, const cJSON *entries, struct pack *pk)
{
    long long n = 0;
    const cJSON *e;
    cJSON_ArrayForEach (e, entries) {
        const cJSON *id = cJSON_GetArrayItem(e, 0);
        if (!cJSON_IsString(id) ||
            strlen(id->valuestring) >= sizeof(((struct held_entry *)0)->id) ||
            !held_add(r, s, id->valuestring)) {
            continue;
        }
        pack_entry(pk, s, id->valuestring, entry_event(e));
        n++;
    }
    return n;
}

static void
submit(struct relay *r, struct pub_item *items, long long n)
{
    if (items) {
        r->held += n;
        metrics_set(r->metrics, "chanced_relay_held", "", (double)r->held);
        publisher_submit(r->pub, items);
    }
}

/* ---- reading ---- */

struct read_ctx {
    struct relay *r;
    struct relay_stream *streams[READ_STREAMS_MAX];
    int reply_at[READ_STREAMS_MAX]; /* index of each stream's XREADGROUP reply */
    int n;
    bool claim; /* XAUTOCLAIM rather than XREADGROUP */
};

static void
on_read(enum redis_status status, cJSON *replies, void *arg)
{
    struct read_ctx *ctx = arg;
    struct relay *r = ctx->r;
    struct pack pk = {0}; /* the events of every stream read go in the same messages */
    pk.tail = &pk.done;
    long long total = 0;
    for (int i = 0; i < ctx->n; i++) {
        struct relay_stream *s = ctx->streams[i];
        s->reading = false;
        const cJSON *rep =
            status == REDIS_DONE ? cJSON_GetArrayItem(replies, ctx->reply_at[i]) : NULL;
        if (rep == NULL) {
            continue;
        }
        if (redis_reply_is_error(rep)) {
            const char *e = redis_reply_error(rep);
            if (e && strstr(e, "NOGROUP")) {
                s->group = false;
                mark_dirty(r, s);
            } else {
                log_warn("relay_read_failed", "stream=%s error=\"%.200s\"", s->key, e ? e : "?");
            }
            continue;
        }
        s->group = true;
        long long n;
        if (ctx->claim) { /* [next start, [[id, fields], ...], [deleted ids]] */
            n = collect(r, s, cJSON_GetArrayItem(rep, 1), &pk);
        } else { /* [[key, [[id, fields], ...]]] or nil */
            n = collect(r, s, cJSON_GetArrayItem(cJSON_GetArrayItem(rep, 0), 1), &pk);
            if (n >= r->conf->relay_batch) {
                mark_dirty(r, s); /* a full page: there may be more */
            }
        }
        total += n;
    }
    log_debug("relay_read", "streams=%d claim=%d status=%d entries=%lld held=%lld", ctx->n,
              ctx->claim, (int)status, total, r->held);
    cJSON_Delete(replies);
    free(ctx);
    pack_close(&pk);
    submit(r, pk.done, total);
    if (r->dirty) {
        schedule_kick(r);
    }
}

static void
send_reads(struct relay *r, struct relay_stream **list, int n, bool claim)
{
    struct read_ctx *ctx = xcalloc(1, sizeof(*ctx));
    ctx->r = r;
    ctx->claim = claim;
    struct redis_batch *b = redis_batch_new(r->redis);
    int cmds = 0;
    char count[24], idle[24];
    snprintf(count, sizeof(count), "%lld", r->conf->relay_batch);
    snprintf(idle, sizeof(idle), "%lld", r->conf->relay_claim_idle_ms);
    for (int i = 0; i < n; i++) {
        struct relay_stream *s = list[i];
        if (!s->group) {
            /* From the start of the stream: entries written before any relay ran are ours too.
             * BUSYGROUP (it exists) is the usual answer and harmless. */
            redis_batch_cmd(b, "XGROUP CREATE %s %s 0 MKSTREAM", s->key, GROUP);
            cmds++;
        }
        if (claim) {
            const char *argv[] = {"XAUTOCLAIM", s->key, GROUP,   r->consumer,
                                  idle,         "0-0",  "COUNT", count};
            redis_batch_argv(b, ARRAY_SIZE(argv), argv, NULL);
        } else {
            const char *argv[] = {"XREADGROUP", "GROUP",   GROUP,  r->consumer, "COUNT",
                                  count,        "STREAMS", s->key, ">"};
            redis_batch_argv(b, ARRAY_SIZE(argv), argv, NULL);
        }
        s->reading = true;
        ctx->streams[ctx->n] = s;
        ctx->reply_at[ctx->n++] = cmds++;
    }
    redis_batch_send(b, on_read, ctx);
}

static void
read_dirty(struct relay *r)
{
    if (!redis_ready(r->redis) || r->held > r->conf->relay_batch * HELD_FACTOR) {
        return; /* the sweep comes back for them */
    }
    struct relay_stream *list[READ_STREAMS_MAX];
    struct relay_stream *keep = NULL;
    while (r->dirty) {
        int n = 0;
        while (r->dirty && n < READ_STREAMS_MAX) {
            struct relay_stream *s = r->dirty;
            r->dirty = s->next;
            if (s->reading) {
                s->next = keep; /* read again when the read in flight is back */
                keep = s;
                continue;
            }
            s->dirty = false;
            list[n++] = s;
        }
        if (n > 0) {
            send_reads(r, list, n, false);
        }
    }
    r->dirty = keep;
}

static void
on_kick(evutil_socket_t fd, short what, void *arg)
{
    UNUSED(fd);
    UNUSED(what);
    read_dirty(arg);
}

/* ---- acknowledging ---- */

static void
on_acked(enum redis_status status, cJSON *replies, void *arg)
{
    UNUSED(arg);
    if (status != REDIS_DONE) {
        /* Confirmed but still pending in Redis: published again after a takeover; the logger
         * stores each _id once. */
        log_warn("relay_ack_failed", "status=%d", (int)status);
    }
    cJSON_Delete(replies);
}

static void
on_nothing_acked(enum redis_status status, cJSON *replies, void *arg)
{
    UNUSED(status);
    UNUSED(arg);
    cJSON_Delete(replies);
}

static void
on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct relay *r = arg;
    UNUSED(fd);
    UNUSED(what);
    struct pub_item *items = r->unconfirmed;
    r->unconfirmed = NULL;
    if (items) {
        publisher_submit(r->pub, items);
    }
}

static int
entry_cmp(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const struct pub_entry *)a)->stream;
    uintptr_t y = (uintptr_t)((const struct pub_entry *)b)->stream;
    return x < y ? -1 : x > y;
}

/* Back from the publisher: XACK + XDEL what the broker confirmed, retry the rest. */
static void
on_published(struct pub_item *items, void *arg)
{
    struct relay *r = arg;
    failpoint("relay_after_publish_before_xack");
    struct redis_batch *b = redis_batch_new(r->redis);
    /* The confirmed messages' entries, grouped by stream (a message may carry several). */
    struct pub_entry *ents = NULL;
    size_t n = 0, cap = 0;
    while (items) {
        struct pub_item *it = items;
        items = it->next;
        if (!it->confirmed) {
            it->next = r->unconfirmed;
            r->unconfirmed = it;
            continue;
        }
        if (n + (size_t)it->nentries > cap) {
            cap = 2 * (n + (size_t)it->nentries);
            ents = xrealloc(ents, cap * sizeof(*ents));
        }
        memcpy(ents + n, it->entries, (size_t)it->nentries * sizeof(*ents));
        n += (size_t)it->nentries;
        it->next = NULL;
        pub_items_free(it);
    }
    if (n > 1) {
        qsort(ents, n, sizeof(*ents), entry_cmp);
    }
    /* One XACK and one XDEL per stream: argv = XACK key GROUP id..., and XDEL key id... is the
     * same vector shifted by one. */
    const char **argv = xcalloc(n + 3, sizeof(*argv));
    for (size_t i = 0, j; i < n; i = j) {
        struct relay_stream *st = ents[i].stream;
        size_t nids = 0;
        for (j = i; j < n && ents[j].stream == st; j++) {
            argv[3 + nids++] = ents[j].id;
            held_remove(r, st, ents[j].id);
        }
        argv[0] = "XACK";
        argv[1] = st->key;
        argv[2] = GROUP;
        redis_batch_argv(b, (int)(3 + nids), argv, NULL);
        argv[1] = "XDEL";
        argv[2] = st->key;
        redis_batch_argv(b, (int)(2 + nids), argv + 1, NULL);
    }
    free(argv);
    free(ents);
    long long done = (long long)n;
    r->held -= done;
    metrics_set(r->metrics, "chanced_relay_held", "", (double)r->held);
    metrics_add(r->metrics, "chanced_relay_published_total", "", (double)done);
    /* An empty batch (nothing confirmed: the broker went away) just finishes on the next turn,
     * as unavailable; that is no failed acknowledgement, so it is not reported as one. */
    redis_batch_send(b, done > 0 ? on_acked : on_nothing_acked, r);
    if (r->unconfirmed && !event_pending(r->retry, EV_TIMEOUT, NULL)) {
        struct timeval tv = {RETRY_MS / 1000, (RETRY_MS % 1000) * 1000};
        event_add(r->retry, &tv);
    }
    if (r->dirty) {
        schedule_kick(r);
    }
}

/* ---- sweeping ---- */

static void
on_categories(enum redis_status status, cJSON *replies, void *arg)
{
    struct relay *r = arg;
    r->listing = false;
    const cJSON *ids = cJSON_GetArrayItem(replies, 0), *id;
    if (status == REDIS_DONE && cJSON_IsArray(ids)) {
        mark_dirty(r, stream_get(r, 0));
        cJSON_ArrayForEach (id, ids) {
            long long cat = cJSON_IsString(id) ? atoll(id->valuestring) : 0;
            if (cat > 0) {
                mark_dirty(r, stream_get(r, cat));
            }
        }
    }
    cJSON_Delete(replies);
    int64_t now = time_mono_ms();
    bool claim = now - r->claimed_ms >= r->conf->relay_claim_idle_ms / 2;
    if (claim && redis_ready(r->redis)) {
        /* Takeover: entries delivered to an instance that died (or to an earlier run of this
         * one) and idle for relay_claim_idle_ms are claimed and published here. */
        r->claimed_ms = now;
        for (size_t i = 0; i < r->nstreams; i += READ_STREAMS_MAX) {
            size_t n = r->nstreams - i < READ_STREAMS_MAX ? r->nstreams - i : READ_STREAMS_MAX;
            send_reads(r, &r->streams[i], (int)n, true);
        }
    }
    read_dirty(r);
}

static void
on_sweep(evutil_socket_t fd, short what, void *arg)
{
    struct relay *r = arg;
    UNUSED(fd);
    UNUSED(what);
    metrics_set(r->metrics, "chanced_dependency_up", "role=\"chance\",dependency=\"rabbitmq\"",
                publisher_connected(r->pub) ? 1 : 0);
    if (r->listing || !redis_ready(r->redis)) {
        return;
    }
    r->listing = true;
    struct redis_batch *b = redis_batch_new(r->redis);
    redis_batch_cmd(b, "ZRANGE %s 0 -1", KEY_CATEGORIES);
    redis_batch_send(b, on_categories, r);
}

/* ---- lifecycle ---- */

struct relay *
relay_new(struct loop *loop, struct redis *redis, struct metrics *metrics,
          const struct chance_conf *conf, const struct rmq_conf *rmq)
{
    struct relay *r = xcalloc(1, sizeof(*r));
    r->loop = loop;
    r->redis = redis;
    r->metrics = metrics;
    r->conf = conf;
    char host[64] = "host", rnd[9];
    gethostname(host, sizeof(host) - 1);
    util_random_hex(rnd, 4);
    /* Unique per run: a restarted instance's old deliveries are taken over like anyone's. */
    snprintf(r->consumer, sizeof(r->consumer), "%.60s-%d-%s", host, (int)getpid(), rnd);
    metrics_describe(metrics, "chanced_relay_published_total", METRICS_COUNTER,
                     "Audit events the broker confirmed and the relay removed from Redis.");
    metrics_describe(metrics, "chanced_relay_held", METRICS_GAUGE,
                     "Audit events read from Redis and not yet confirmed by the broker.");
    r->pub = publisher_new(loop, rmq, (int)conf->relay_batch, on_published, r);
    r->kick = event_new(loop_base(loop), -1, 0, on_kick, r);
    r->retry = event_new(loop_base(loop), -1, 0, on_retry, r);
    r->sweep = loop_timer(loop, (int)conf->relay_sweep_ms, true, on_sweep, r);
    log_info("relay_started", "consumer=%s sweep_ms=%lld claim_idle_ms=%lld", r->consumer,
             conf->relay_sweep_ms, conf->relay_claim_idle_ms);
    return r;
}

void
relay_free(struct relay *r)
{
    if (r == NULL) {
        return;
    }
    publisher_free(r->pub);
    event_free(r->kick);
    event_free(r->retry);
    event_free(r->sweep);
    pub_items_free(r->unconfirmed);
    for (size_t b = 0; b < HELD_BUCKETS; b++) {
        while (r->held_set[b]) {
            struct held_entry *e = r->held_set[b];
            r->held_set[b] = e->next;
            free(e);
        }
    }
    for (size_t i = 0; i < r->nstreams; i++) {
        free(r->streams[i]);
    }
    free(r->streams);
    free(r);
}

bool
relay_connected(const struct relay *r)
{
    return r && publisher_connected(r->pub);
}
