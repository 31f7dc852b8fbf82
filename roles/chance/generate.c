/*
 * Batches of categories and codes. chance.generate records the batch (once per batch key) and
 * answers at once; a driver then writes it in steps that are each single-slot and idempotent:
 *
 *   create (on {g})  ->  every category's meta (on {c})  ->  codes in pipelined chunks: reserve
 *   each in the code index (HSETNX on {i<xy>}) and write them with the load script (on {c},
 *   capped at the category's target)  ->  every full category ready (on {c})  ->  the batch
 *   closed with its audit event (on {g})
 *
 * The driver holds a lease on the batch and renews it with its progress every GEN_RENEW_MS (250 ms); a batch
 * whose driver died (its lease expired) is taken over by any chance instance and resumed where
 * it stands (the categories' totals say how far). Transient failures are retried; a batch that
 * cannot finish within generate_give_up_ms of failures, or hits a permanent error, is closed as
 * failed with a batch.failed event, and what it wrote is removed. chance.batch reports the
 * progress. A category is claimable only once the whole batch is closed as ready.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chance.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "redis.h"
#include "relay.h"
#include "rpc_server.h"
#include "scripts.h"

#define GEN_WINDOW 8        /* chunks in flight at once */
#define GEN_BUSY_CHUNK 250  /* codes per chunk while yielding: short head-of-line waits */
#define GEN_LEASE_MS 30000  /* a driver silent this long loses its batch */
#define GEN_RENEW_MS 250    /* progress and lease renewal */
#define GEN_RESUME_MS 5000  /* how often orphaned batches are looked for */
#define GEN_CLEAN_CHUNK 500 /* codes removed per step after a failure */
#define GEN_MAX_CATEGORIES 1000
#define GEN_MAX_PER_CATEGORY 1000000
#define GEN_MAX_REWARD 1000000000000LL
#define GEN_MAX_TIME 253402300799000LL /* 9999-12-31T23:59:59Z */
#define BATCH_KEY_MAX 64

enum gen_phase {
    GEN_LOAD,   /* read the batch's parameters */
    GEN_INIT,   /* create the categories' metas */
    GEN_FILL,   /* write codes, category by category */
    GEN_READY,  /* mark full categories ready */
    GEN_FINISH, /* close the batch with its event */
    GEN_FAIL,   /* close the batch as failed */
    GEN_CLEAN,  /* remove what a failed batch wrote */
    GEN_DONE,   /* nothing left: free */
};

/* A batch's parameters, as stored in its hash. */
struct gen_params {
    long long ncat, per_cat, rmin, rmax, rstep, limit, starts, ends, first_cat, created_at;
    char prefix[CODEGEN_MAX_PREFIX + 1];
    char name[101];
    char actor_id[65], actor_name[65], actor_role[17];
    char ns[40];               /* chance:{g}:instance of this Redis dataset */
    char nonce[NONCE_HEX + 1]; /* part of the batch's event ids */
};

struct gen {
    struct chance *ch;   /* borrowed */
    struct gen *next;    /* ch->gens link */
    long long batch;     /* its id */
    struct gen_params p; /* loaded in GEN_LOAD */
    enum gen_phase phase;
    long long cat_index;   /* category being filled (0-based) */
    long long cat_total;   /* codes that category holds */
    long long cat_queued;  /* codes of that category handed to chunks in flight */
    long long written;     /* codes in the batch's categories, as far as we know */
    long long cats_done;   /* categories full */
    int inflight;          /* Redis batches of this driver in flight */
    int64_t failing_since; /* monotonic ms of the first failure of a streak, or 0 */
    int backoff_ms;        /* next wait after a failure */
    char error[200];       /* why it failed */
    bool lost;             /* the lease went elsewhere: stop issuing work */
    struct event *timer;   /* retries and lease renewal */
    int64_t renewed_ms;    /* last renewal sent */
    bool renewing;         /* a renewal in flight */
    long long clean_index; /* GEN_CLEAN: category being emptied */
    int64_t rest_until_ms; /* yielding to claims: no new chunk before this (monotonic ms) */
};

struct chunk {
    struct gen *g; /* borrowed */
    long long category;
    int n;                           /* codes in the chunk */
    char (*codes)[CODEGEN_MAX_CODE]; /* n codes */
    long long *rewards;              /* n rewards */
    bool *held;                      /* n: this chunk reserved the code in the index */
    int64_t started_ms;              /* monotonic ms it was started */
    bool yielding;                   /* started while claims were being served */
};

static void step(struct gen *g);
static void on_gen_timer(evutil_socket_t fd, short what, void *arg);

static void
format_toman(long long v, char *out, size_t size)
{
    char digits[32];
    int n = snprintf(digits, sizeof(digits), "%lld", v);
    size_t o = 0;
    for (int i = 0; i < n && o + 2 < size; i++) {
        if (i > 0 && (n - i) % 3 == 0) {
            out[o++] = ',';
        }
        out[o++] = digits[i];
    }
    out[o] = '\0';
}

/* ---- drivers ---- */

static struct gen *
gen_find(struct chance *ch, long long batch)
{
    for (struct gen *g = ch->gens; g; g = g->next) {
        if (g->batch == batch) {
            return g;
        }
    }
    return NULL;
}

static struct gen *
gen_new(struct chance *ch, long long batch)
{
    struct gen *g = xcalloc(1, sizeof(*g));
    g->ch = ch;
    g->batch = batch;
    g->phase = GEN_LOAD;
    g->backoff_ms = 100;
    g->timer = event_new(loop_base(ch->loop), -1, 0, on_gen_timer, g);
    g->next = ch->gens;
    ch->gens = g;
    ch->generating++;
    log_info("generate_started", "batch=%lld owner=%s", batch, ch->instance);
    return g;
}

static void
gen_free(struct gen *g)
{
    struct chance *ch = g->ch;
    for (struct gen **p = &ch->gens; *p; p = &(*p)->next) {
        if (*p == g) {
            *p = g->next;
            break;
        }
    }
    ch->generating--;
    event_free(g->timer);
    free(g);
}

/* Called when a step's Redis work is over; frees a finished or stopped driver once idle. */
static bool
gen_settle(struct gen *g)
{
    if (g->inflight > 0) {
        return false;
    }
    if (g->phase == GEN_DONE || g->lost || g->ch->stopping) {
        gen_free(g);
        return true;
    }
    return false;
}

static void
schedule(struct gen *g, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(g->timer, &tv);
}

/* A step failed for a reason that may pass (Redis down, a failover, memory full): try again
 * with backoff, and fail the batch once failures last generate_give_up_ms. */
static void
transient(struct gen *g, const char *why)
{
    int64_t now = time_mono_ms();
    if (g->failing_since == 0) {
        g->failing_since = now;
        log_warn("generate_retrying", "batch=%lld reason=\"%s\"", g->batch, why);
    }
    snprintf(g->error, sizeof(g->error), "%s", why);
    if (now - g->failing_since >= g->ch->conf->generate_give_up_ms && g->phase < GEN_FAIL) {
        g->phase = GEN_FAIL;
    }
    schedule(g, g->backoff_ms);
    g->backoff_ms = g->backoff_ms * 2 > 5000 ? 5000 : g->backoff_ms * 2;
}

/* A step failed for good (a script or data error): the batch fails. */
static void
permanent(struct gen *g, const char *why)
{
    snprintf(g->error, sizeof(g->error), "%s", why);
    log_error("generate_error", "batch=%lld reason=\"%s\"", g->batch, why);
    if (g->phase < GEN_FAIL) {
        g->phase = GEN_FAIL;
    }
    schedule(g, 0);
}

static void
progressed(struct gen *g)
{
    g->failing_since = 0;
    g->backoff_ms = 100;
}

/* Classifies a finished Redis batch: 0 fine, -1 handled as a failure (already scheduled). */
static int
check(struct gen *g, enum redis_status status, const cJSON *replies)
{
    if (status != REDIS_DONE) {
        transient(g, status == REDIS_UNAVAILABLE ? "Redis unavailable" : "Redis timed out");
        return -1;
    }
    const cJSON *r;
    cJSON_ArrayForEach (r, replies) {
        const char *e = redis_reply_is_error(r) ? redis_reply_error(r) : NULL;
        if (e == NULL) {
            continue;
        }
        if (strncmp(e, "OOM", 3) == 0 || strncmp(e, "READONLY", 8) == 0 ||
            strncmp(e, "LOADING", 7) == 0 || strncmp(e, "BUSY", 4) == 0 ||
            strncmp(e, "CLUSTERDOWN", 11) == 0 || strncmp(e, "TRYAGAIN", 8) == 0 ||
            strncmp(e, "MASTERDOWN", 10) == 0 || strstr(e, "unavailable")) {
            transient(g, e);
        } else {
            permanent(g, e);
        }
        return -1;
    }
    return 0;
}

/* ---- events ---- */

static char *
batch_event(const struct gen *g, const char *type, long long codes, long long total_reward)
{
    const struct gen_params *p = &g->p;
    char lo[32], hi[32];
    format_toman(p->rmin, lo, sizeof(lo));
    format_toman(p->rmax, hi, sizeof(hi));
    cJSON *ev = cJSON_CreateObject();
    char *id = xasprintf("%s:%s:%lld:%s", type, p->ns, g->batch, p->nonce);
    cJSON_AddStringToObject(ev, "_id", id);
    free(id);
    cJSON_AddNumberToObject(ev, "ts", (double)time_wall_ms());
    cJSON_AddStringToObject(ev, "service", "chance");
    cJSON_AddStringToObject(ev, "type", type);
    cJSON *actor = cJSON_AddObjectToObject(ev, "actor");
    cJSON_AddStringToObject(actor, "id", p->actor_id);
    cJSON_AddStringToObject(actor, "username", p->actor_name);
    cJSON_AddStringToObject(actor, "role", p->actor_role);
    cJSON *subject = cJSON_AddObjectToObject(ev, "subject");
    cJSON_AddNumberToObject(subject, "batch", (double)g->batch);
    cJSON *cats = cJSON_AddArrayToObject(subject, "categories");
    for (long long i = 0; i < p->ncat; i++) {
        cJSON_AddItemToArray(cats, cJSON_CreateNumber((double)(p->first_cat + i)));
    }
    cJSON *data = cJSON_AddObjectToObject(ev, "data");
    cJSON_AddNumberToObject(data, "codes", (double)codes);
    cJSON_AddNumberToObject(data, "codes_per_category", (double)p->per_cat);
    cJSON_AddNumberToObject(data, "reward_min", (double)p->rmin);
    cJSON_AddNumberToObject(data, "reward_max", (double)p->rmax);
    char *msg, n[32];
    format_toman(codes, n, sizeof(n)); /* thousands separators, like the Toman amounts */
    if (strcmp(type, "batch.generated") == 0) {
        cJSON_AddNumberToObject(data, "total_reward", (double)total_reward);
        msg =
            xasprintf("%s %s generated %s codes in %lld categor%s, rewards %s\xe2\x80\x93%s Toman",
                      p->actor_role, p->actor_name, n, p->ncat, p->ncat == 1 ? "y" : "ies", lo, hi);
    } else {
        cJSON_AddStringToObject(data, "error", g->error);
        msg = xasprintf("generating batch %lld of %s %s failed after %s of %lld codes (%s); "
                        "its categories were removed",
                        g->batch, p->actor_role, p->actor_name, n, p->ncat * p->per_cat, g->error);
    }
    cJSON_AddStringToObject(ev, "message", msg);
    free(msg);
    char *text = cJSON_PrintUnformatted(ev);
    cJSON_Delete(ev);
    return text;
}

/* ---- GEN_LOAD ---- */

static void
copy_kv(const cJSON *kv, const char *key, char *out, size_t size)
{
    const char *v = chance_kv_get(kv, key);
    snprintf(out, size, "%s", v ? v : "");
}

static void
on_loaded(enum redis_status status, cJSON *replies, void *arg)
{
    struct gen *g = arg;
    g->inflight--;
    if (check(g, status, replies) == 0) {
        const cJSON *kv = cJSON_GetArrayItem(replies, 0);
        const char *state = chance_kv_get(kv, "state");
        struct gen_params *p = &g->p;
        p->ncat = chance_kv_int(kv, "categories");
        p->per_cat = chance_kv_int(kv, "codes_per_category");
        p->rmin = chance_kv_int(kv, "reward_min");
        p->rmax = chance_kv_int(kv, "reward_max");
        p->rstep = chance_kv_int(kv, "reward_step");
        p->limit = chance_kv_int(kv, "per_user_limit");
        p->starts = chance_kv_int(kv, "starts_at");
        p->ends = chance_kv_int(kv, "ends_at");
        p->first_cat = chance_kv_int(kv, "first_category");
        p->created_at = chance_kv_int(kv, "created_at");
        copy_kv(kv, "prefix", p->prefix, sizeof(p->prefix));
        copy_kv(kv, "name", p->name, sizeof(p->name));
        copy_kv(kv, "actor_id", p->actor_id, sizeof(p->actor_id));
        copy_kv(kv, "actor", p->actor_name, sizeof(p->actor_name));
        copy_kv(kv, "actor_role", p->actor_role, sizeof(p->actor_role));
        copy_kv(kv, "ns", p->ns, sizeof(p->ns));
        copy_kv(kv, "nonce", p->nonce, sizeof(p->nonce));
        g->written = chance_kv_int(kv, "codes_written");
        if (state == NULL || p->ncat < 1 || p->per_cat < 1 || p->rstep < 1 || p->first_cat < 1) {
            permanent(g, "the batch record is incomplete");
            g->phase = GEN_DONE; /* nothing we can act on */
        } else if (strcmp(state, "generating") == 0) {
            progressed(g);
            g->phase = GEN_INIT;
            schedule(g, 0);
        } else if (strcmp(state, "failed") == 0) {
            copy_kv(kv, "error", g->error, sizeof(g->error));
            g->phase = GEN_CLEAN;
            schedule(g, 0);
        } else {
            g->phase = GEN_DONE;
        }
    }
    cJSON_Delete(replies);
    gen_settle(g);
}

static void
load_batch(struct gen *g)
{
    char key[KEY_MAX];
    chance_batch_key(key, g->batch);
    struct redis_batch *b = redis_batch_new(g->ch->redis);
    redis_batch_cmd(b, "HGETALL %s", key);
    g->inflight++;
    redis_batch_send(b, on_loaded, g);
}

/* ---- GEN_INIT ---- */

static void
on_inited(enum redis_status status, cJSON *replies, void *arg)
{
    struct gen *g = arg;
    g->inflight--;
    if (check(g, status, replies) == 0) {
        progressed(g);
        g->phase = GEN_FILL;
        g->cat_index = 0;
        g->cat_total = -1; /* unknown until read */
        g->written = 0;
        schedule(g, 0);
    }
    cJSON_Delete(replies);
    gen_settle(g);
}

static void
init_categories(struct gen *g)
{
    const struct gen_params *p = &g->p;
    struct redis_batch *b = redis_batch_new(g->ch->redis);
    for (long long i = 0; i < p->ncat; i++) {
        long long cat = p->first_cat + i;
        char key[KEY_MAX], name[160], v[10][24];
        if (p->name[0] && p->ncat > 1) {
            snprintf(name, sizeof(name), "%s %lld", p->name, i + 1);
        } else if (p->name[0]) {
            snprintf(name, sizeof(name), "%s", p->name);
        } else {
            snprintf(name, sizeof(name), "Category %lld", cat);
        }
        chance_key(key, cat, "meta");
        const long long nums[] = {cat,      g->batch,  p->rmin, p->rmax,    p->rstep,
                                  p->limit, p->starts, p->ends, p->per_cat, p->created_at};
        for (size_t k = 0; k < ARRAY_SIZE(nums); k++) {
            snprintf(v[k], sizeof(v[k]), "%lld", nums[k]);
        }
        const char *keys[] = {key};
        const char *args[] = {"id",
                              v[0],
                              "name",
                              name,
                              "batch",
                              v[1],
                              "reward_min",
                              v[2],
                              "reward_max",
                              v[3],
                              "reward_step",
                              v[4],
                              "per_user_limit",
                              v[5],
                              "starts_at",
                              v[6],
                              "ends_at",
                              v[7],
                              "target",
                              v[8],
                              "created_at",
                              v[9],
                              "enabled",
                              "1",
                              "status",
                              "generating",
                              "total",
                              "0",
                              "total_reward",
                              "0",
                              "assigned",
                              "0",
                              "paid_out",
                              "0",
                              "prefix",
                              p->prefix,
                              "ns",
                              p->ns};
        redis_batch_script(b, SCRIPT_CAT_INIT, 1, keys, (int)ARRAY_SIZE(args), args, NULL);
    }
    g->inflight++;
    redis_batch_send(b, on_inited, g);
}

/* ---- GEN_FILL ---- */

static void
chunk_free(struct chunk *c)
{
    free(c->codes);
    free(c->rewards);
    free(c->held);
    free(c);
}

static void
on_unreserved(enum redis_status status, cJSON *replies, void *arg)
{
    (void)status;
    (void)arg;
    cJSON_Delete(replies);
}

/* Gives back the index entries this chunk holds for codes at positions from..n-1 that its
 * category did not take: Redis refused the reservations or the load script (-OOM: a script
 * fails at its first write, so nothing was written), or the script stopped at the category's
 * target. Left there, they would point at a category that never holds them, and a failed
 * batch's cleanup (which walks the free sets) would never find them. Only after a definite
 * answer: a load that timed out may have written its codes. HDEL is allowed when Redis is out
 * of memory. */
static void
unreserve(struct chunk *c, int from)
{
    struct redis_batch *b = NULL;
    for (int i = from; i < c->n; i++) {
        if (!c->held[i]) {
            continue;
        }
        if (b == NULL) {
            b = redis_batch_new(c->g->ch->redis);
        }
        char key[KEY_MAX];
        chance_index_key(key, c->codes[i]);
        const char *argv[] = {"HDEL", key, c->codes[i]};
        redis_batch_argv(b, 3, argv, NULL);
        c->held[i] = false;
    }
    if (b != NULL) {
        redis_batch_send(b, on_unreserved, NULL);
    }
}

static void send_reserve(struct chunk *c, const int *pend, int npend);

static void
on_chunk_loaded(enum redis_status status, cJSON *replies, void *arg)
{
    struct chunk *c = arg;
    struct gen *g = c->g;
    g->inflight--;
    g->cat_queued -= c->n;
    if (check(g, status, replies) != 0) {
        if (status == REDIS_DONE) {
            unreserve(c, 0); /* the script answered with an error: it wrote nothing */
        }
    } else {
        const cJSON *r = cJSON_GetArrayItem(replies, 0);
        const cJSON *added = cJSON_GetArrayItem(r, 0), *total = cJSON_GetArrayItem(r, 1);
        if (!json_is_int(added) || !json_is_int(total)) {
            permanent(g, "unexpected reply of the load script");
        } else {
            progressed(g);
            /* The script takes the chunk's codes in order (each is new to the category, the
             * index said so) and stops at the target: the rest are not the category's. */
            unreserve(c, (int)added->valuedouble);
            g->written += (long long)added->valuedouble;
            if (c->yielding) { /* rest (100 - share) / share times as long as the chunk took */
                int64_t now = time_mono_ms(), share = g->ch->conf->generate_busy_share;
                g->rest_until_ms = now + (now - c->started_ms) * (100 - share) / share;
            }
            if (c->category == g->p.first_cat + g->cat_index &&
                (long long)total->valuedouble > g->cat_total) {
                g->cat_total = (long long)total->valuedouble;
            }
            schedule(g, 0);
        }
    }
    cJSON_Delete(replies);
    chunk_free(c);
    gen_settle(g);
}

static void
send_load(struct chunk *c)
{
    char keys[3][KEY_MAX], n[16];
    chance_key(keys[0], c->category, "meta");
    chance_key(keys[1], c->category, "free");
    chance_key(keys[2], c->category, "codes");
    const char *kp[] = {keys[0], keys[1], keys[2]};
    /* Codes, rewards, and each code's record ready-made: no JSON encoding inside Redis. */
    const char **args = xcalloc((size_t)c->n * 3 + 1, sizeof(char *));
    char(*rewards)[24] = xcalloc((size_t)c->n, sizeof(*rewards));
    char(*records)[48] = xcalloc((size_t)c->n, sizeof(*records));
    snprintf(n, sizeof(n), "%d", c->n);
    args[0] = n;
    for (int i = 0; i < c->n; i++) {
        snprintf(rewards[i], sizeof(rewards[i]), "%lld", c->rewards[i]);
        snprintf(records[i], sizeof(records[i]), "{\"r\":%lld,\"s\":\"available\"}", c->rewards[i]);
        args[1 + i] = c->codes[i];
        args[1 + c->n + i] = rewards[i];
        args[1 + 2 * c->n + i] = records[i];
    }
    struct redis_batch *b = redis_batch_new(c->g->ch->redis);
    redis_batch_script(b, SCRIPT_LOAD, 3, kp, 3 * c->n + 1, args, NULL);
    redis_batch_send(b, on_chunk_loaded, c);
    free(args);
    free(rewards);
    free(records);
}

struct reserve {
    struct chunk *c;
    int *pend; /* positions of the codes sent, in reply order */
    int npend;
};

static void
on_reserved(enum redis_status status, cJSON *replies, void *arg)
{
    struct reserve *rs = arg;
    struct chunk *c = rs->c;
    struct gen *g = c->g;
    if (status == REDIS_DONE && replies != NULL) { /* each 1: a code this chunk now holds */
        const cJSON *r = NULL;
        for (int i = 0; i < rs->npend && (r = r ? r->next : replies->child) != NULL; i++) {
            c->held[rs->pend[i]] = json_is_int(r) && r->valuedouble == 1;
        }
    }
    if (check(g, status, replies) != 0 || cJSON_GetArraySize(replies) != rs->npend) {
        if (status == REDIS_DONE) {
            unreserve(c, 0); /* some reservations were refused (-OOM): give back the rest */
        }
        g->inflight--;
        g->cat_queued -= c->n;
        chunk_free(c);
    } else {
        /* Codes the index had already (a collision with another code, or one of ours from a
         * retried chunk) get fresh codes and are reserved again; the rest are ours. */
        int *again = xcalloc((size_t)rs->npend, sizeof(int)), nagain = 0;
        const cJSON *r = NULL;
        for (int i = 0; i < rs->npend; i++) {
            r = r ? r->next : replies->child;
            if (!json_is_int(r) || r->valuedouble != 1) {
                codegen_make(&g->ch->rng, g->p.prefix, (int)g->ch->conf->code_length,
                             c->codes[rs->pend[i]]);
                again[nagain++] = rs->pend[i];
            }
        }
        if (nagain > 0) {
            log_info("generate_collisions", "category=%lld count=%d", c->category, nagain);
            send_reserve(c, again, nagain);
        } else {
            send_load(c);
        }
        free(again);
    }
    cJSON_Delete(replies);
    free(rs->pend);
    free(rs);
    gen_settle(g);
}

/* HSETNX of each code into its index shard, pipelined (each to its own slot). */
static void
send_reserve(struct chunk *c, const int *pend, int npend)
{
    struct reserve *rs = xcalloc(1, sizeof(*rs));
    rs->c = c;
    rs->npend = npend;
    rs->pend = xcalloc((size_t)npend, sizeof(int));
    memcpy(rs->pend, pend, (size_t)npend * sizeof(int));
    char cat[24];
    snprintf(cat, sizeof(cat), "%lld", c->category);
    struct redis_batch *b = redis_batch_new(c->g->ch->redis);
    for (int i = 0; i < npend; i++) {
        char key[KEY_MAX];
        chance_index_key(key, c->codes[pend[i]]);
        const char *argv[] = {"HSETNX", key, c->codes[pend[i]], cat};
        redis_batch_argv(b, 4, argv, NULL);
    }
    redis_batch_send(b, on_reserved, rs);
}

static void
start_chunk(struct gen *g, long long n, bool yielding)
{
    struct chunk *c = xcalloc(1, sizeof(*c));
    c->g = g;
    c->started_ms = time_mono_ms();
    c->yielding = yielding;
    metrics_add(g->ch->metrics, "chanced_generate_chunks_total",
                yielding ? "mode=\"yield\"" : "mode=\"full\"", 1);
    c->category = g->p.first_cat + g->cat_index;
    c->n = (int)n;
    c->codes = xcalloc((size_t)n, sizeof(*c->codes));
    c->rewards = xcalloc((size_t)n, sizeof(long long));
    c->held = xcalloc((size_t)n, sizeof(bool));
    int *all = xcalloc((size_t)n, sizeof(int));
    for (int i = 0; i < c->n; i++) {
        codegen_make(&g->ch->rng, g->p.prefix, (int)g->ch->conf->code_length, c->codes[i]);
        c->rewards[i] = codegen_reward(&g->ch->rng, g->p.rmin, g->p.rmax, g->p.rstep);
        all[i] = i;
    }
    g->cat_queued += n;
    g->inflight++;
    send_reserve(c, all, c->n);
    free(all);
}

static void
on_cat_total(enum redis_status status, cJSON *replies, void *arg)
{
    struct gen *g = arg;
    g->inflight--;
    if (check(g, status, replies) == 0) {
        const cJSON *t = cJSON_GetArrayItem(replies, 0);
        g->cat_total = cJSON_IsString(t) ? atoll(t->valuestring) : 0;
        progressed(g);
        schedule(g, 0);
    }
    cJSON_Delete(replies);
    gen_settle(g);
}

/* Is chance serving claims? Then generation yields: one small chunk at a time, with rests. */
static bool
claims_busy(const struct gen *g)
{
    return g->ch->conf->generate_busy_share < 100 && chance_claims_busy(g->ch);
}

/*
 * Keeps GEN_WINDOW chunks in flight for the current category; moves on when it is full. While
 * claims are being served, one chunk of GEN_BUSY_CHUNK codes at a time, each followed by a rest
 * (set when it completes) so that generation works generate_busy_share percent of the time:
 * claims wait behind a short pipeline, not eight long ones, and keep most of the CPU.
 */
static void
fill(struct gen *g)
{
    const struct gen_params *p = &g->p;
    bool busy = claims_busy(g);
    int window = busy ? 1 : GEN_WINDOW;
    long long size = g->ch->conf->generate_chunk;
    if (busy && size > GEN_BUSY_CHUNK) {
        size = GEN_BUSY_CHUNK;
    }
    int64_t rest = busy ? g->rest_until_ms - time_mono_ms() : 0;
    while (g->cat_index < p->ncat) {
        if (g->cat_total < 0) { /* where does this category stand (a resumed batch)? */
            char key[KEY_MAX];
            chance_key(key, p->first_cat + g->cat_index, "meta");
            struct redis_batch *b = redis_batch_new(g->ch->redis);
            redis_batch_cmd(b, "HGET %s total", key);
            g->inflight++;
            redis_batch_send(b, on_cat_total, g);
            return;
        }
        long long left = p->per_cat - g->cat_total - g->cat_queued;
        if (left <= 0 && g->cat_queued == 0 && g->cat_total >= p->per_cat) {
            g->cat_index++;
            g->cats_done++;
            g->cat_total = -1;
            continue;
        }
        int chunks = g->inflight - (g->renewing ? 1 : 0); /* a renewal is not a chunk */
        if (left > 0 && chunks == 0 && rest > 0) {
            schedule(g, (int)rest);
            return;
        }
        for (; left > 0 && chunks < window; chunks++) {
            long long n = left < size ? left : size;
            start_chunk(g, n, busy);
            left -= n;
        }
        return; /* chunk replies call back into step() */
    }
    /* A lease renewal may still be in flight: its reply steps nobody, so do not wait for it. */
    if (g->inflight <= (g->renewing ? 1 : 0)) {
        g->phase = GEN_READY;
        schedule(g, 0);
    }
}

/* ---- GEN_READY and GEN_FINISH ---- */

static void
on_readied(enum redis_status status, cJSON *replies, void *arg)
{
    struct gen *g = arg;
    g->inflight--;
    if (check(g, status, replies) == 0) {
        bool all = true;
        const cJSON *r;
        cJSON_ArrayForEach (r, replies) {
            all = all && json_is_int(r) && r->valuedouble == 1;
        }
        if (all) {
            progressed(g);
            g->phase = GEN_FINISH;
            schedule(g, 0);
        } else {
            /* Someone else's cleanup or damage: never close a batch with a short category. */
            permanent(g, "a category of the batch is not full or not generating");
        }
    }
    cJSON_Delete(replies);
    gen_settle(g);
}

static void
ready_categories(struct gen *g)
{
    struct redis_batch *b = redis_batch_new(g->ch->redis);
    for (long long i = 0; i < g->p.ncat; i++) {
        char key[KEY_MAX];
        chance_key(key, g->p.first_cat + i, "meta");
        const char *keys[] = {key};
        redis_batch_script(b, SCRIPT_CAT_FINISH, 1, keys, 0, NULL, NULL);
    }
    g->inflight++;
    redis_batch_send(b, on_readied, g);
}

static void
on_finished(enum redis_status status, cJSON *replies, void *arg)
{
    struct gen *g = arg;
    g->inflight--;
    if (check(g, status, replies) == 0) {
        const cJSON *r = cJSON_GetArrayItem(replies, 0);
        if (json_is_int(r) && r->valuedouble == 1) {
            log_info("batch_generated", "batch=%lld categories=%lld codes=%lld", g->batch,
                     g->p.ncat, g->p.ncat * g->p.per_cat);
            relay_touch(g->ch->relay, 0); /* the batch.generated event */
        }
        g->phase = GEN_DONE;
    }
    cJSON_Delete(replies);
    gen_settle(g);
}

static void
on_rewards(enum redis_status status, cJSON *replies, void *arg)
{
    struct gen *g = arg;
    g->inflight--;
    if (check(g, status, replies) == 0) {
        long long total_reward = 0;
        const cJSON *r;
        cJSON_ArrayForEach (r, replies) {
            total_reward += cJSON_IsString(r) ? atoll(r->valuestring) : 0;
        }
        char *ev = batch_event(g, "batch.generated", g->p.ncat * g->p.per_cat, total_reward);
        char bkey[KEY_MAX], id[24];
        chance_batch_key(bkey, g->batch);
        snprintf(id, sizeof(id), "%lld", g->batch);
        const char *keys[] = {bkey, KEY_CATEGORIES, KEY_EVENTS, KEY_ACTIVE};
        const char **args = xcalloc((size_t)g->p.ncat + 2, sizeof(char *));
        char(*cats)[24] = xcalloc((size_t)g->p.ncat, sizeof(*cats));
        args[0] = id;
        args[1] = ev;
        for (long long i = 0; i < g->p.ncat; i++) {
            snprintf(cats[i], sizeof(cats[i]), "%lld", g->p.first_cat + i);
            args[2 + i] = cats[i];
        }
        struct redis_batch *b = redis_batch_new(g->ch->redis);
        redis_batch_script(b, SCRIPT_BATCH_FINISH, 4, keys, (int)g->p.ncat + 2, args, NULL);
        redis_batch_cmd(b, "HSET %s total_reward %lld codes_written %lld categories_done %lld",
                        bkey, total_reward, g->p.ncat * g->p.per_cat, g->p.ncat);
        g->inflight++;
        redis_batch_send(b, on_finished, g);
        free(args);
        free(cats);
        free(ev);
    }
    cJSON_Delete(replies);
    gen_settle(g);
}

static void
finish_batch(struct gen *g)
{
    struct redis_batch *b = redis_batch_new(g->ch->redis);
    for (long long i = 0; i < g->p.ncat; i++) {
        char key[KEY_MAX];
        chance_key(key, g->p.first_cat + i, "meta");
        redis_batch_cmd(b, "HGET %s total_reward", key);
    }
    g->inflight++;
    redis_batch_send(b, on_rewards, g);
}

/* ---- GEN_FAIL and GEN_CLEAN ---- */

static void
on_failed(enum redis_status status, cJSON *replies, void *arg)
{
    struct gen *g = arg;
    g->inflight--;
    if (status == REDIS_DONE && !redis_reply_is_error(cJSON_GetArrayItem(replies, 0))) {
        log_warn("generate_failed", "batch=%lld written=%lld reason=\"%s\"", g->batch, g->written,
                 g->error);
        relay_touch(g->ch->relay, 0); /* the batch.failed event */
        g->phase = GEN_CLEAN;
        g->clean_index = 0;
        schedule(g, 0);
    } else {
        schedule(g, 1000); /* closing it needs Redis too: keep trying */
    }
    cJSON_Delete(replies);
    gen_settle(g);
}

static void
fail_batch(struct gen *g)
{
    char *ev = batch_event(g, "batch.failed", g->written, 0);
    char bkey[KEY_MAX];
    chance_batch_key(bkey, g->batch);
    const char *keys[] = {bkey, KEY_EVENTS};
    const char *args[] = {g->error, ev};
    struct redis_batch *b = redis_batch_new(g->ch->redis);
    redis_batch_script(b, SCRIPT_BATCH_FAIL, 2, keys, 2, args, NULL);
    g->inflight++;
    redis_batch_send(b, on_failed, g);
    free(ev);
}

struct clean {
    struct gen *g;
    long long category;
    int n; /* codes removed by this step (0: the category is empty now) */
};

static void
on_cleaned(enum redis_status status, cJSON *replies, void *arg)
{
    struct clean *cl = arg;
    struct gen *g = cl->g;
    g->inflight--;
    if (status != REDIS_DONE) {
        schedule(g, 1000);
    } else if (cl->n == 0) {
        g->clean_index++;
        schedule(g, 0);
    } else {
        schedule(g, 0);
    }
    cJSON_Delete(replies);
    free(cl);
    gen_settle(g);
}

/* Removes up to GEN_CLEAN_CHUNK codes of one category: index entries, records, free entries. */
static void
on_clean_members(enum redis_status status, cJSON *replies, void *arg)
{
    struct clean *cl = arg;
    struct gen *g = cl->g;
    const cJSON *codes = cJSON_GetArrayItem(replies, 0);
    if (status != REDIS_DONE || !cJSON_IsArray(codes)) {
        g->inflight--;
        cJSON_Delete(replies);
        free(cl);
        schedule(g, 1000);
        gen_settle(g);
        return;
    }
    struct redis_batch *b = redis_batch_new(g->ch->redis);
    char key[KEY_MAX];
    const cJSON *c;
    cJSON_ArrayForEach (c, codes) {
        if (cJSON_IsString(c)) {
            chance_index_key(key, c->valuestring);
            redis_batch_cmd(b, "HDEL %s %s", key, c->valuestring);
            chance_key(key, cl->category, "codes");
            redis_batch_cmd(b, "HDEL %s %s", key, c->valuestring);
            chance_key(key, cl->category, "free");
            redis_batch_cmd(b, "SREM %s %s", key, c->valuestring);
            cl->n++;
        }
    }
    if (cl->n == 0) { /* the free set is empty: the category's remaining keys go */
        static const char *const what[] = {"meta",  "free",   "codes",  "claims",
                                           "users", "byuser", "events", "log"};
        for (size_t i = 0; i < ARRAY_SIZE(what); i++) {
            chance_key(key, cl->category, what[i]);
            redis_batch_cmd(b, "DEL %s", key);
        }
    }
    cJSON_Delete(replies);
    redis_batch_send(b, on_cleaned, cl);
}

static void
on_clean_done(enum redis_status status, cJSON *replies, void *arg)
{
    struct gen *g = arg;
    g->inflight--;
    if (status == REDIS_DONE) {
        log_info("generate_cleaned", "batch=%lld categories=%lld", g->batch, g->p.ncat);
        g->phase = GEN_DONE;
    } else {
        schedule(g, 1000);
    }
    cJSON_Delete(replies);
    gen_settle(g);
}

static void
clean(struct gen *g)
{
    struct redis_batch *b = redis_batch_new(g->ch->redis);
    g->inflight++;
    if (g->clean_index >= g->p.ncat) {
        char bkey[KEY_MAX];
        chance_batch_key(bkey, g->batch);
        redis_batch_cmd(b, "SREM %s %lld", KEY_ACTIVE, g->batch);
        redis_batch_cmd(b, "HSET %s cleaned 1 owner %s", bkey, "");
        redis_batch_send(b, on_clean_done, g);
        return;
    }
    struct clean *cl = xcalloc(1, sizeof(*cl));
    cl->g = g;
    cl->category = g->p.first_cat + g->clean_index;
    char key[KEY_MAX];
    chance_key(key, cl->category, "free");
    redis_batch_cmd(b, "SRANDMEMBER %s %d", key, GEN_CLEAN_CHUNK);
    redis_batch_send(b, on_clean_members, cl);
}

/* ---- the driver's loop ---- */

static void
on_renewed(enum redis_status status, cJSON *replies, void *arg)
{
    struct gen *g = arg;
    g->inflight--;
    g->renewing = false;
    const cJSON *r = cJSON_GetArrayItem(replies, 0);
    if (status == REDIS_DONE && json_is_int(r) && r->valuedouble == 0 && g->phase < GEN_FINISH) {
        /* Another instance holds the batch (we were silent too long), or it is closed. */
        log_warn("generate_lease_lost", "batch=%lld", g->batch);
        g->lost = true;
    }
    cJSON_Delete(replies);
    gen_settle(g);
}

static void
renew(struct gen *g)
{
    char bkey[KEY_MAX], lease[16], written[24], done[24];
    chance_batch_key(bkey, g->batch);
    snprintf(lease, sizeof(lease), "%d", GEN_LEASE_MS);
    long long progress = g->cats_done * g->p.per_cat + (g->cat_total > 0 ? g->cat_total : 0);
    snprintf(written, sizeof(written), "%lld",
             g->phase >= GEN_READY ? g->p.ncat * g->p.per_cat : progress);
    snprintf(done, sizeof(done), "%lld", g->cats_done);
    const char *keys[] = {bkey};
    const char *args[] = {g->ch->instance,   lease, "renew", "codes_written", written,
                          "categories_done", done};
    struct redis_batch *b = redis_batch_new(g->ch->redis);
    redis_batch_script(b, SCRIPT_BATCH_LEASE, 1, keys, g->phase == GEN_LOAD ? 3 : 7, args, NULL);
    g->renewing = true;
    g->renewed_ms = time_mono_ms();
    g->inflight++;
    redis_batch_send(b, on_renewed, g);
}

/* Runs the current phase. Every Redis reply ends in schedule() or gen_settle(). */
static void
step(struct gen *g)
{
    if (g->lost || g->ch->stopping) {
        gen_settle(g);
        return;
    }
    if (!g->renewing && time_mono_ms() - g->renewed_ms >= GEN_RENEW_MS && g->phase < GEN_DONE) {
        renew(g);
    }
    switch (g->phase) {
    case GEN_LOAD:
        if (g->inflight <= (g->renewing ? 1 : 0)) {
            load_batch(g);
        }
        break;
    case GEN_INIT: init_categories(g); break;
    case GEN_FILL: fill(g); break;
    case GEN_READY:
        if (g->inflight <= (g->renewing ? 1 : 0)) {
            ready_categories(g);
        }
        break;
    case GEN_FINISH:
        if (g->inflight <= (g->renewing ? 1 : 0)) {
            finish_batch(g);
        }
        break;
    case GEN_FAIL:
        if (g->inflight <= (g->renewing ? 1 : 0)) {
            fail_batch(g);
        }
        break;
    case GEN_CLEAN:
        if (g->inflight <= (g->renewing ? 1 : 0)) {
            clean(g);
        }
        break;
    case GEN_DONE: gen_settle(g); break;
    }
}

static void
on_gen_timer(evutil_socket_t fd, short what, void *arg)
{
    UNUSED(fd);
    UNUSED(what);
    step(arg);
}

/* ---- chance.batch ---- */

/* The public view of a batch from its hash. */
static cJSON *
batch_json(long long id, const cJSON *kv)
{
    cJSON *b = cJSON_CreateObject();
    long long ncat = chance_kv_int(kv, "categories"), first = chance_kv_int(kv, "first_category");
    long long per = chance_kv_int(kv, "codes_per_category");
    const char *state = chance_kv_get(kv, "state");
    cJSON_AddNumberToObject(b, "id", (double)id);
    cJSON_AddStringToObject(b, "name", chance_kv_get(kv, "name") ? chance_kv_get(kv, "name") : "");
    cJSON_AddStringToObject(b, "state", state ? state : "unknown");
    cJSON *cats = cJSON_AddArrayToObject(b, "categories");
    for (long long i = 0; i < ncat && i < GEN_MAX_CATEGORIES; i++) {
        cJSON_AddItemToArray(cats, cJSON_CreateNumber((double)(first + i)));
    }
    cJSON_AddNumberToObject(b, "codes_per_category", (double)per);
    cJSON_AddNumberToObject(b, "total", (double)(ncat * per));
    cJSON_AddNumberToObject(b, "codes_written", (double)chance_kv_int(kv, "codes_written"));
    cJSON_AddNumberToObject(b, "categories_done", (double)chance_kv_int(kv, "categories_done"));
    static const char *const nums[] = {"reward_min", "reward_max", "reward_step", "per_user_limit",
                                       "created_at"};
    for (size_t i = 0; i < ARRAY_SIZE(nums); i++) {
        cJSON_AddNumberToObject(b, nums[i], (double)chance_kv_int(kv, nums[i]));
    }
    static const char *const opt[] = {"starts_at", "ends_at", "finished_at", "total_reward"};
    for (size_t i = 0; i < ARRAY_SIZE(opt); i++) {
        long long v = chance_kv_int(kv, opt[i]);
        cJSON_AddItemToObject(b, opt[i], v ? cJSON_CreateNumber((double)v) : cJSON_CreateNull());
    }
    cJSON_AddStringToObject(b, "prefix",
                            chance_kv_get(kv, "prefix") ? chance_kv_get(kv, "prefix") : "");
    const char *err = chance_kv_get(kv, "error");
    cJSON_AddItemToObject(b, "error", err ? cJSON_CreateString(err) : cJSON_CreateNull());
    return b;
}

struct batch_query {
    struct rpc_call *call;
    long long id;
};

static void
on_batch_read(enum redis_status status, cJSON *replies, void *arg)
{
    struct batch_query *q = arg;
    if (!chance_replies_failed(q->call, status, replies)) {
        const cJSON *kv = cJSON_GetArrayItem(replies, 0);
        if (cJSON_GetArraySize(kv) == 0) {
            rpc_reply_error(q->call, "batch_not_found", "no batch %lld", q->id);
        } else {
            cJSON *resp = cJSON_CreateObject();
            cJSON_AddItemToObject(resp, "batch", batch_json(q->id, kv));
            rpc_reply(q->call, resp);
        }
    }
    cJSON_Delete(replies);
    free(q);
}

static void
read_batch(struct chance *ch, struct rpc_call *call, long long id)
{
    struct batch_query *q = xcalloc(1, sizeof(*q));
    q->call = call;
    q->id = id;
    char key[KEY_MAX];
    chance_batch_key(key, id);
    struct redis_batch *b = redis_batch_new(ch->redis);
    redis_batch_cmd(b, "HGETALL %s", key);
    redis_batch_send(b, on_batch_read, q);
}

void
chance_batch(struct rpc_call *call, const cJSON *data, void *arg)
{
    static const char *const fields[] = {"id", NULL};
    long long id = 0;
    char err[256];
    if (json_check_fields(data, fields, err, sizeof(err)) != 0 ||
        json_get_int(data, "id", true, 1, JSON_MAX_SAFE_INT, &id, err, sizeof(err)) != 0) {
        rpc_reply_error(call, "bad_request", "%s", err);
        return;
    }
    read_batch(arg, call, id);
}

/* ---- chance.generate ---- */

struct create {
    struct chance *ch;     /* borrowed */
    struct rpc_call *call; /* answered when the batch is recorded */
    struct gen_params p;   /* the request */
    char batch_key[BATCH_KEY_MAX + 1];
    long long total; /* codes in all */
};

/* Names are shown to players and operators: no control characters, and none of the characters
 * that mean something in Redis key patterns or hash tags, so a name can never be mistaken for
 * (or pasted into) a key. */
static bool
valid_name(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f || strchr("{}*:", *p) != NULL) {
            return false;
        }
    }
    return true;
}

static int
parse_request(struct create *cr, const cJSON *data, long long max_codes, char *err, size_t errlen)
{
    static const char *const fields[] = {
        "categories", "codes_per_category", "reward_min", "reward_max", "reward_step", "name",
        "prefix",     "per_user_limit",     "starts_at",  "ends_at",    "actor",       "batch_key",
        NULL};
    struct gen_params *p = &cr->p;
    const char *name = NULL, *prefix = NULL, *key = NULL, *aid, *aname, *arole;
    p->rstep = 1;
    p->limit = 1;
    if (json_check_fields(data, fields, err, errlen) != 0 ||
        json_get_int(data, "categories", true, 1, GEN_MAX_CATEGORIES, &p->ncat, err, errlen) ||
        json_get_int(data, "codes_per_category", true, 1, GEN_MAX_PER_CATEGORY, &p->per_cat, err,
                     errlen) ||
        json_get_int(data, "reward_min", true, 1, GEN_MAX_REWARD, &p->rmin, err, errlen) ||
        json_get_int(data, "reward_max", true, p->rmin, GEN_MAX_REWARD, &p->rmax, err, errlen) ||
        json_get_int(data, "reward_step", false, 1, GEN_MAX_REWARD, &p->rstep, err, errlen) ||
        json_get_int(data, "per_user_limit", false, 1, 1000000, &p->limit, err, errlen) ||
        json_get_int(data, "starts_at", false, 0, GEN_MAX_TIME, &p->starts, err, errlen) ||
        json_get_int(data, "ends_at", false, 0, GEN_MAX_TIME, &p->ends, err, errlen) ||
        json_get_string(data, "name", false, 100, &name, err, errlen) ||
        json_get_string(data, "prefix", false, CODEGEN_MAX_PREFIX, &prefix, err, errlen) ||
        json_get_string(data, "batch_key", false, BATCH_KEY_MAX, &key, err, errlen) ||
        chance_actor(data, &aid, &aname, &arole, err, errlen)) {
        return -1;
    }
    if (p->rmax > p->rmin && p->rstep > p->rmax - p->rmin) {
        snprintf(err, errlen, "field 'reward_step' must not exceed reward_max - reward_min");
        return -1;
    }
    if (p->ends && p->ends <= p->starts) {
        snprintf(err, errlen, "field 'ends_at' must be later than starts_at");
        return -1;
    }
    if (name && !valid_name(name)) {
        snprintf(err, errlen, "field 'name' may not contain control characters or { } : *");
        return -1;
    }
    if (prefix && codegen_prefix(prefix, p->prefix) != 0) {
        snprintf(err, errlen, "field 'prefix' must be 1 to 8 letters or digits");
        return -1;
    }
    if (key && !chance_token_ok(key, BATCH_KEY_MAX)) {
        snprintf(err, errlen, "field 'batch_key' must be 1 to %d of [A-Za-z0-9_-]", BATCH_KEY_MAX);
        return -1;
    }
    cr->total = p->ncat * p->per_cat;
    if (cr->total > max_codes) {
        snprintf(err, errlen, "%lld codes exceed the limit of %lld per batch", cr->total,
                 max_codes);
        return 1;
    }
    snprintf(p->name, sizeof(p->name), "%s", name ? name : "");
    snprintf(p->actor_id, sizeof(p->actor_id), "%s", aid);
    snprintf(p->actor_name, sizeof(p->actor_name), "%s", aname);
    snprintf(p->actor_role, sizeof(p->actor_role), "%s", arole);
    if (key) {
        snprintf(cr->batch_key, sizeof(cr->batch_key), "%s", key);
    } else {
        util_random_hex(cr->batch_key, 16); /* no key: every request is a new batch */
    }
    return 0;
}

static void
on_created(enum redis_status status, cJSON *replies, void *arg)
{
    struct create *cr = arg;
    struct chance *ch = cr->ch;
    const cJSON *r = cJSON_GetArrayItem(replies, 0);
    const cJSON *fresh = cJSON_GetArrayItem(r, 0), *id = cJSON_GetArrayItem(r, 1);
    if (!chance_replies_failed(cr->call, status, replies)) {
        long long batch = cJSON_IsString(id) ? atoll(id->valuestring)
                          : json_is_int(id)  ? (long long)id->valuedouble
                                             : 0;
        if (!json_is_int(fresh) || batch < 1) {
            rpc_reply_error(cr->call, "internal", "unexpected reply recording the batch");
        } else {
            if (fresh->valuedouble == 1 && gen_find(ch, batch) == NULL) {
                step(gen_new(ch, batch)); /* we hold its lease: drive it */
            }
            read_batch(ch, cr->call, batch); /* a repeated key answers with the first batch */
        }
    }
    cJSON_Delete(replies);
    free(cr);
}

static void
on_ids(enum redis_status status, cJSON *replies, void *arg)
{
    struct create *cr = arg;
    const cJSON *batch = cJSON_GetArrayItem(replies, 0), *last = cJSON_GetArrayItem(replies, 1);
    if (chance_replies_failed(cr->call, status, replies)) {
        cJSON_Delete(replies);
        free(cr);
        return;
    }
    if (!json_is_int(batch) || !json_is_int(last)) {
        rpc_reply_error(cr->call, "internal", "unexpected reply allocating ids");
        cJSON_Delete(replies);
        free(cr);
        return;
    }
    struct gen_params *p = &cr->p;
    long long id = (long long)batch->valuedouble;
    p->first_cat = (long long)last->valuedouble - p->ncat + 1;
    cJSON_Delete(replies);
    char bkey[KEY_MAX], sid[24], fresh[33], v[11][24];
    chance_batch_key(bkey, id);
    snprintf(sid, sizeof(sid), "%lld", id);
    util_random_hex(fresh, 8);
    chance_nonce(cr->ch, p->nonce);
    char lease[24];
    snprintf(lease, sizeof(lease), "%lld", (long long)time_wall_ms() + GEN_LEASE_MS);
    /* The batch hash: numbers first (formatted into v), then text fields. */
    static const char *const numeric[] = {
        "id",         "categories",     "codes_per_category", "reward_min",
        "reward_max", "reward_step",    "per_user_limit",     "starts_at",
        "ends_at",    "first_category", "created_at"};
    const long long nums[] = {id,
                              p->ncat,
                              p->per_cat,
                              p->rmin,
                              p->rmax,
                              p->rstep,
                              p->limit,
                              p->starts,
                              p->ends,
                              p->first_cat,
                              (long long)time_wall_ms()};
    const char *text[][2] = {
        {"name", p->name},           {"prefix", p->prefix},         {"actor_id", p->actor_id},
        {"actor", p->actor_name},    {"actor_role", p->actor_role}, {"nonce", p->nonce},
        {"state", "generating"},     {"codes_written", "0"},        {"categories_done", "0"},
        {"owner", cr->ch->instance}, {"lease_until", lease}};
    const char *args[3 + 2 * (ARRAY_SIZE(numeric) + ARRAY_SIZE(text))] = {cr->batch_key, sid,
                                                                          fresh};
    size_t n = 3;
    for (size_t k = 0; k < ARRAY_SIZE(numeric); k++) {
        snprintf(v[k], sizeof(v[k]), "%lld", nums[k]);
        args[n++] = numeric[k];
        args[n++] = v[k];
    }
    for (size_t k = 0; k < ARRAY_SIZE(text); k++) {
        args[n++] = text[k][0];
        args[n++] = text[k][1];
    }
    const char *keys[] = {KEY_BATCHKEYS, bkey, KEY_ACTIVE, KEY_INSTANCE};
    struct redis_batch *b = redis_batch_new(cr->ch->redis);
    redis_batch_script(b, SCRIPT_BATCH_CREATE, 4, keys, (int)n, args, NULL);
    redis_batch_send(b, on_created, cr);
}

static void
on_space(enum redis_status status, cJSON *replies, void *arg)
{
    struct create *cr = arg;
    if (chance_replies_failed(cr->call, status, replies)) {
        cJSON_Delete(replies);
        free(cr);
        return;
    }
    /* The index is sharded; its size is the sum of its shards'. */
    double existing = 0;
    const cJSON *n;
    cJSON_ArrayForEach (n, replies) {
        existing += cJSON_IsNumber(n) ? n->valuedouble : 0;
    }
    cJSON_Delete(replies);
    if (!codegen_sparse_enough(existing + (double)cr->total, (int)cr->ch->conf->code_length)) {
        rpc_reply_error(cr->call, "too_many_codes",
                        "the code space cannot hold that many codes sparsely; use longer codes");
        free(cr);
        return;
    }
    struct redis_batch *b = redis_batch_new(cr->ch->redis);
    redis_batch_cmd(b, "INCR %s", KEY_SEQ_BATCH);
    redis_batch_cmd(b, "INCRBY %s %lld", KEY_SEQ_CATEGORY, cr->p.ncat);
    redis_batch_send(b, on_ids, cr);
}

void
chance_generate(struct rpc_call *call, const cJSON *data, void *arg)
{
    struct chance *ch = arg;
    struct create *cr = xcalloc(1, sizeof(*cr));
    char err[256];
    cr->ch = ch;
    cr->call = call;
    int rc = parse_request(cr, data, ch->conf->max_codes_per_batch, err, sizeof(err));
    if (rc != 0) {
        rpc_reply_error(call, rc > 0 ? "too_many_codes" : "bad_request", "%s", err);
        free(cr);
        return;
    }
    /* How many codes exist already (the sparseness check): HLEN of every index shard. */
    struct redis_batch *b = redis_batch_new(ch->redis);
    for (int a = 0; a < CODEGEN_RADIX; a++) {
        for (int c = 0; c < CODEGEN_RADIX; c++) {
            char key[KEY_MAX], code[3] = {CODEGEN_ALPHABET[a], CODEGEN_ALPHABET[c], '\0'};
            chance_index_key(key, code);
            redis_batch_cmd(b, "HLEN %s", key);
        }
    }
    redis_batch_send(b, on_space, cr);
}

/* ---- resuming ---- */

static void
on_taken(enum redis_status status, cJSON *replies, void *arg)
{
    struct chance *ch = arg;
    /* replies: one per batch tried; each carries the batch id through a second command */
    if (status == REDIS_DONE) {
        int n = 0;
        const cJSON **v = json_items(replies, &n);
        for (int i = 0; i + 1 < n; i += 2) {
            const cJSON *got = v[i], *id = v[i + 1];
            long long batch = cJSON_IsString(id) ? atoll(id->valuestring) : 0;
            if (json_is_int(got) && got->valuedouble == 1 && batch > 0 &&
                gen_find(ch, batch) == NULL && !ch->stopping) {
                log_warn("generate_resumed", "batch=%lld note=\"its driver stopped\"", batch);
                step(gen_new(ch, batch));
            }
        }
        free(v);
    }
    cJSON_Delete(replies);
}

static void
on_active(enum redis_status status, cJSON *replies, void *arg)
{
    struct chance *ch = arg;
    const cJSON *ids = cJSON_GetArrayItem(replies, 0), *id;
    if (status != REDIS_DONE || !cJSON_IsArray(ids) || ch->stopping) {
        cJSON_Delete(replies);
        return;
    }
    struct redis_batch *b = redis_batch_new(ch->redis);
    int n = 0;
    cJSON_ArrayForEach (id, ids) {
        long long batch = cJSON_IsString(id) ? atoll(id->valuestring) : 0;
        if (batch < 1 || gen_find(ch, batch)) {
            continue;
        }
        char bkey[KEY_MAX], lease[16];
        chance_batch_key(bkey, batch);
        snprintf(lease, sizeof(lease), "%d", GEN_LEASE_MS);
        const char *keys[] = {bkey};
        const char *args[] = {ch->instance, lease, "take"};
        redis_batch_script(b, SCRIPT_BATCH_LEASE, 1, keys, 3, args, NULL);
        redis_batch_cmd(b, "HGET %s id", bkey);
        n++;
    }
    cJSON_Delete(replies);
    if (n == 0) {
        redis_batch_cmd(b, "PING"); /* an empty batch would be refused */
    }
    redis_batch_send(b, on_taken, ch);
}

void
gen_resume_orphans(struct chance *ch)
{
    if (ch->stopping || !redis_ready(ch->redis)) {
        return;
    }
    struct redis_batch *b = redis_batch_new(ch->redis);
    redis_batch_cmd(b, "SMEMBERS %s", KEY_ACTIVE);
    redis_batch_send(b, on_active, ch);
}

static void
on_released(enum redis_status status, cJSON *replies, void *arg)
{
    struct gen *g = arg;
    UNUSED(status);
    g->inflight--;
    cJSON_Delete(replies);
    gen_settle(g);
}

void
gen_stop_all(struct chance *ch)
{
    /* Drivers end at their next step and give their leases back, so another instance (or this
     * one, restarted) resumes the batches at once rather than after GEN_LEASE_MS. */
    for (struct gen *g = ch->gens; g; g = g->next) {
        g->lost = true;
        char bkey[KEY_MAX];
        chance_batch_key(bkey, g->batch);
        const char *keys[] = {bkey};
        const char *args[] = {ch->instance, "0", "release"};
        struct redis_batch *b = redis_batch_new(ch->redis);
        redis_batch_script(b, SCRIPT_BATCH_LEASE, 1, keys, 3, args, NULL);
        g->inflight++;
        redis_batch_send(b, on_released, g);
    }
}
