/*
 * chance.generate: creates a batch of categories and codes. Pipelined in chunks (a reserve script
 * on the global index, then a load script on the category's slot), several chunks in flight,
 * with progress streamed to the caller. A category is claimable only once the whole batch is
 * written (status "ready"), so a failed or interrupted batch never exposes half a category.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chance.h"
#include "json.h"
#include "log.h"
#include "redis.h"
#include "relay.h"
#include "rpc_server.h"
#include "scripts.h"

#define GEN_WINDOW 4        /* chunks in flight at once */
#define GEN_PROGRESS_MS 250 /* least interval between progress items */
#define GEN_MAX_CATEGORIES 1000
#define GEN_MAX_PER_CATEGORY 1000000
#define GEN_MAX_REWARD 1000000000000LL
#define GEN_MAX_TIME 253402300799000LL /* 9999-12-31T23:59:59Z */

struct gen {
    struct chance *ch;     /* borrowed */
    struct rpc_call *call; /* finished by gen_fail or gen_done */
    long long ncat, per_cat, rmin, rmax, rstep, limit, starts, ends;
    char prefix[CODEGEN_MAX_PREFIX + 1];
    char name[101];
    char actor_id[65], actor_name[65], actor_role[17];
    char ns[40]; /* chance:instance of this Redis dataset (event ids) */
    long long batch, first_cat;
    long long cat_index;   /* category being filled (0-based) */
    long long left_in_cat; /* codes not yet handed to a chunk in that category */
    long long done, total, total_reward;
    int inflight; /* chunks in flight */
    bool failed;  /* stop issuing work; reply once the window drains */
    int64_t created_at, last_progress;
};

struct chunk {
    struct gen *g; /* borrowed */
    long long category;
    int n;                           /* codes in the chunk */
    char (*codes)[CODEGEN_MAX_CODE]; /* n codes */
    long long *rewards;              /* n rewards */
    int *pend;                       /* positions still to reserve in the global index */
    int npend;
};

static void pump(struct gen *g);

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

static void
gen_free(struct gen *g)
{
    g->ch->generating--;
    free(g);
}

static void
gen_fail(struct gen *g, const char *code, const char *message)
{
    if (!g->failed) {
        g->failed = true;
        log_warn("generate_failed", "batch=%lld code=%s done=%lld total=%lld", g->batch, code,
                 g->done, g->total);
        rpc_reply_error(g->call, code, "%s", message);
        g->call = NULL;
    }
    if (g->inflight == 0) {
        gen_free(g);
    }
}

static void
chunk_free(struct chunk *c)
{
    free(c->pend);
    free(c->codes);
    free(c->rewards);
    free(c);
}

static void
send_progress(struct gen *g, bool force)
{
    int64_t now = time_mono_ms();
    if (!force && now - g->last_progress < GEN_PROGRESS_MS) {
        return;
    }
    g->last_progress = now;
    cJSON *p = cJSON_CreateObject();
    cJSON *inner = cJSON_AddObjectToObject(p, "progress");
    cJSON_AddNumberToObject(inner, "done", (double)g->done);
    cJSON_AddNumberToObject(inner, "total", (double)g->total);
    rpc_reply_partial(g->call, p);
}

static cJSON *
batch_json(const struct gen *g)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddNumberToObject(b, "id", (double)g->batch);
    cJSON_AddStringToObject(b, "name", g->name);
    cJSON *cats = cJSON_AddArrayToObject(b, "categories");
    for (long long i = 0; i < g->ncat; i++) {
        cJSON_AddItemToArray(cats, cJSON_CreateNumber((double)(g->first_cat + i)));
    }
    cJSON_AddNumberToObject(b, "codes_per_category", (double)g->per_cat);
    cJSON_AddNumberToObject(b, "total", (double)g->total);
    cJSON_AddNumberToObject(b, "reward_min", (double)g->rmin);
    cJSON_AddNumberToObject(b, "reward_max", (double)g->rmax);
    cJSON_AddNumberToObject(b, "reward_step", (double)g->rstep);
    cJSON_AddNumberToObject(b, "per_user_limit", (double)g->limit);
    cJSON_AddItemToObject(b, "starts_at",
                          g->starts ? cJSON_CreateNumber((double)g->starts) : cJSON_CreateNull());
    cJSON_AddItemToObject(b, "ends_at",
                          g->ends ? cJSON_CreateNumber((double)g->ends) : cJSON_CreateNull());
    cJSON_AddStringToObject(b, "prefix", g->prefix);
    cJSON_AddNumberToObject(b, "created_at", (double)g->created_at);
    cJSON_AddNumberToObject(b, "paid_total", (double)g->total_reward);
    return b;
}

static void
on_finished(enum redis_status status, cJSON *replies, void *arg)
{
    struct gen *g = arg;
    cJSON_Delete(replies);
    if (status != REDIS_DONE) {
        gen_fail(g, status == REDIS_UNAVAILABLE ? "unavailable" : "timeout",
                 "Redis failed while finishing the batch; its categories stay unclaimable");
        return;
    }
    log_info("batch_generated", "batch=%lld categories=%lld codes=%lld", g->batch, g->ncat,
             g->total);
    relay_touch(g->ch->relay, 0); /* the batch.generated event */
    cJSON *resp = cJSON_CreateObject();
    cJSON_AddItemToObject(resp, "batch", batch_json(g));
    rpc_reply(g->call, resp);
    gen_free(g);
}

/* All codes are written: mark every category ready, index it, and record the audit event. */
static void
finish(struct gen *g)
{
    char lo[32], hi[32], key[KEY_MAX];
    format_toman(g->rmin, lo, sizeof(lo));
    format_toman(g->rmax, hi, sizeof(hi));
    cJSON *ev = cJSON_CreateObject();
    char *id = xasprintf("batch.generated:%s:%lld", g->ns, g->batch);
    cJSON_AddStringToObject(ev, "_id", id);
    free(id);
    cJSON_AddNumberToObject(ev, "ts", (double)time_wall_ms());
    cJSON_AddStringToObject(ev, "service", "chance");
    cJSON_AddStringToObject(ev, "type", "batch.generated");
    cJSON *actor = cJSON_AddObjectToObject(ev, "actor");
    cJSON_AddStringToObject(actor, "id", g->actor_id);
    cJSON_AddStringToObject(actor, "username", g->actor_name);
    cJSON_AddStringToObject(actor, "role", g->actor_role);
    cJSON *subject = cJSON_AddObjectToObject(ev, "subject");
    cJSON_AddNumberToObject(subject, "batch", (double)g->batch);
    cJSON *cats = cJSON_AddArrayToObject(subject, "categories");
    for (long long i = 0; i < g->ncat; i++) {
        cJSON_AddItemToArray(cats, cJSON_CreateNumber((double)(g->first_cat + i)));
    }
    cJSON *data = cJSON_AddObjectToObject(ev, "data");
    cJSON_AddNumberToObject(data, "codes", (double)g->total);
    cJSON_AddNumberToObject(data, "codes_per_category", (double)g->per_cat);
    cJSON_AddNumberToObject(data, "reward_min", (double)g->rmin);
    cJSON_AddNumberToObject(data, "reward_max", (double)g->rmax);
    cJSON_AddNumberToObject(data, "total_reward", (double)g->total_reward);
    char *msg = xasprintf(
        "%s %s generated %lld codes in %lld categor%s, rewards %s\xe2\x80\x93%s Toman",
        g->actor_role, g->actor_name, g->total, g->ncat, g->ncat == 1 ? "y" : "ies", lo, hi);
    cJSON_AddStringToObject(ev, "message", msg);
    free(msg);
    char *evs = cJSON_PrintUnformatted(ev);
    cJSON_Delete(ev);

    struct redis_batch *b = redis_batch_new(g->ch->redis);
    redis_batch_cmd(b, "MULTI");
    for (long long i = 0; i < g->ncat; i++) {
        long long cat = g->first_cat + i;
        chance_key(key, cat, "meta");
        redis_batch_cmd(b, "HSET %s status ready", key);
        redis_batch_cmd(b, "ZADD chance:categories %lld %lld", cat, cat);
    }
    redis_batch_cmd(b, "HSET chance:batch:%lld status ready total %lld total_reward %lld", g->batch,
                    g->total, g->total_reward);
    redis_batch_cmd(b, "XADD chance:{g}:events * e %s", evs);
    redis_batch_cmd(b, "EXEC");
    free(evs);
    redis_batch_send(b, on_finished, g);
}

static void on_reserved(enum redis_status status, cJSON *replies, void *arg);

static const char *
failure_code(int status)
{
    return status == REDIS_UNAVAILABLE ? "unavailable" : "timeout";
}

static void
send_reserve(struct chunk *c)
{
    const char **args = xcalloc((size_t)c->npend + 1, sizeof(char *));
    char cat[24];
    snprintf(cat, sizeof(cat), "%lld", c->category);
    args[0] = cat;
    for (int i = 0; i < c->npend; i++) {
        args[i + 1] = c->codes[c->pend[i]];
    }
    const char *keys[] = {"chance:codes"};
    struct redis_batch *b = redis_batch_new(c->g->ch->redis);
    redis_batch_script(b, SCRIPT_RESERVE, 1, keys, c->npend + 1, args, NULL);
    free(args);
    redis_batch_send(b, on_reserved, c);
}

static void
on_loaded(enum redis_status status, cJSON *replies, void *arg)
{
    struct chunk *c = arg;
    struct gen *g = c->g;
    const cJSON *sum = cJSON_GetArrayItem(replies, 0);
    g->inflight--;
    if (status != REDIS_DONE || !cJSON_IsNumber(sum)) {
        if (status == REDIS_DONE) {
            log_error("generate_load_failed", "error=\"%s\"",
                      redis_reply_error(sum) ? redis_reply_error(sum) : "unexpected reply");
        }
        cJSON_Delete(replies);
        chunk_free(c);
        gen_fail(g, status == REDIS_DONE ? "internal" : failure_code(status),
                 "writing codes failed; the batch's categories stay unclaimable");
        return;
    }
    g->done += c->n;
    g->total_reward += (long long)sum->valuedouble;
    cJSON_Delete(replies);
    chunk_free(c);
    if (g->failed) {
        gen_fail(g, "", "");
        return;
    }
    send_progress(g, false);
    pump(g);
}

static void
send_load(struct chunk *c)
{
    char prefix[KEY_MAX], cat[24];
    size_t nkeys = (size_t)c->n + 2;
    char **keys = xcalloc(nkeys, sizeof(char *));
    const char **args = xcalloc((size_t)c->n * 2 + 1, sizeof(char *));
    char(*rewards)[24] = xcalloc((size_t)c->n, sizeof(*rewards));

    keys[0] = xmalloc(KEY_MAX);
    chance_key(keys[0], c->category, "meta");
    keys[1] = xmalloc(KEY_MAX);
    chance_key(keys[1], c->category, "free");
    chance_key(prefix, c->category, "code:");
    snprintf(cat, sizeof(cat), "%lld", c->category);
    args[0] = cat;
    for (int i = 0; i < c->n; i++) {
        keys[i + 2] = xasprintf("%s%s", prefix, c->codes[i]);
        snprintf(rewards[i], sizeof(rewards[i]), "%lld", c->rewards[i]);
        args[1 + i] = c->codes[i];
        args[1 + c->n + i] = rewards[i];
    }
    struct redis_batch *b = redis_batch_new(c->g->ch->redis);
    redis_batch_script(b, SCRIPT_LOAD, (int)nkeys, (const char **)keys, 2 * c->n + 1, args, NULL);
    redis_batch_send(b, on_loaded, c);
    for (size_t i = 0; i < nkeys; i++) {
        free(keys[i]);
    }
    free(keys);
    free(args);
    free(rewards);
}

static void
on_reserved(enum redis_status status, cJSON *replies, void *arg)
{
    struct chunk *c = arg;
    struct gen *g = c->g;
    const cJSON *dups = cJSON_GetArrayItem(replies, 0);
    if (status != REDIS_DONE || !cJSON_IsArray(dups) || g->failed) {
        g->inflight--;
        cJSON_Delete(replies);
        chunk_free(c);
        gen_fail(g, status == REDIS_DONE ? "internal" : failure_code(status),
                 "reserving codes failed; the batch's categories stay unclaimable");
        return;
    }
    /* Positions reported as taken (a collision with an older code, or a repeat inside this
     * chunk) get fresh codes and are reserved again; the rest are ours already. */
    int npend = 0;
    const cJSON *d;
    cJSON_ArrayForEach (d, dups) {
        int i = d->valueint - 1;
        if (i >= 0 && i < c->npend) {
            c->pend[npend++] = c->pend[i];
        }
    }
    cJSON_Delete(replies);
    c->npend = npend;
    if (npend > 0) {
        log_info("generate_collisions", "category=%lld count=%d", c->category, npend);
        for (int i = 0; i < npend; i++) {
            codegen_make(&g->ch->rng, g->prefix, (int)g->ch->conf->code_length,
                         c->codes[c->pend[i]]);
        }
        send_reserve(c);
        return;
    }
    send_load(c);
}

static void
start_chunk(struct gen *g)
{
    long long n =
        g->left_in_cat < g->ch->conf->generate_chunk ? g->left_in_cat : g->ch->conf->generate_chunk;
    struct chunk *c = xcalloc(1, sizeof(*c));
    c->g = g;
    c->category = g->first_cat + g->cat_index;
    c->n = (int)n;
    c->codes = xcalloc((size_t)n, sizeof(*c->codes));
    c->rewards = xcalloc((size_t)n, sizeof(long long));
    c->pend = xcalloc((size_t)n, sizeof(int));
    c->npend = (int)n;
    for (int i = 0; i < c->n; i++) {
        codegen_make(&g->ch->rng, g->prefix, (int)g->ch->conf->code_length, c->codes[i]);
        c->rewards[i] = codegen_reward(&g->ch->rng, g->rmin, g->rmax, g->rstep);
        c->pend[i] = i;
    }
    g->left_in_cat -= n;
    if (g->left_in_cat == 0 && g->cat_index + 1 < g->ncat) {
        g->cat_index++;
        g->left_in_cat = g->per_cat;
    }
    g->inflight++;
    send_reserve(c);
}

static void
pump(struct gen *g)
{
    /* A stop request lets a batch in flight finish (the drain waits for it, bounded by
     * shutdown_timeout_ms); a forced stop leaves its categories "generating", never claimable. */
    while (g->inflight < GEN_WINDOW && g->left_in_cat > 0) {
        start_chunk(g);
    }
    if (g->inflight == 0 && g->left_in_cat == 0) {
        send_progress(g, true);
        finish(g);
    }
}

static void
on_metas_written(enum redis_status status, cJSON *replies, void *arg)
{
    struct gen *g = arg;
    bool ok = status == REDIS_DONE;
    const cJSON *r;
    cJSON_ArrayForEach (r, replies) {
        ok = ok && !redis_reply_is_error(r);
    }
    cJSON_Delete(replies);
    if (!ok) {
        gen_fail(g, status == REDIS_DONE ? "internal" : failure_code(status),
                 "creating the categories failed");
        return;
    }
    g->cat_index = 0;
    g->left_in_cat = g->per_cat;
    pump(g);
}

static void
on_ids(enum redis_status status, cJSON *replies, void *arg)
{
    struct gen *g = arg;
    const cJSON *last = cJSON_GetArrayItem(replies, 0), *batch = cJSON_GetArrayItem(replies, 1);
    if (status != REDIS_DONE || !cJSON_IsNumber(last) || !cJSON_IsNumber(batch)) {
        cJSON_Delete(replies);
        gen_fail(g, status == REDIS_DONE ? "internal" : failure_code(status),
                 "allocating category ids failed; nothing was created");
        return;
    }
    g->first_cat = (long long)last->valuedouble - g->ncat + 1;
    g->batch = (long long)batch->valuedouble;
    cJSON_Delete(replies);

    struct redis_batch *b = redis_batch_new(g->ch->redis);
    char key[KEY_MAX];
    for (long long i = 0; i < g->ncat; i++) {
        long long cat = g->first_cat + i;
        char name[160];
        if (g->name[0] && g->ncat > 1) {
            snprintf(name, sizeof(name), "%s %lld", g->name, i + 1);
        } else if (g->name[0]) {
            snprintf(name, sizeof(name), "%s", g->name);
        } else {
            snprintf(name, sizeof(name), "Category %lld", cat);
        }
        chance_key(key, cat, "meta");
        redis_batch_cmd(b,
                        "HSET %s id %lld name %s batch %lld reward_min %lld reward_max %lld "
                        "reward_step %lld per_user_limit %lld starts_at %lld ends_at %lld "
                        "enabled 1 status generating total 0 total_reward 0 assigned 0 "
                        "paid_out 0 created_at %lld prefix %s ns %s",
                        key, cat, name, g->batch, g->rmin, g->rmax, g->rstep, g->limit, g->starts,
                        g->ends, (long long)g->created_at, g->prefix, g->ns);
    }
    redis_batch_cmd(b,
                    "HSET chance:batch:%lld id %lld name %s first_category %lld categories %lld "
                    "codes_per_category %lld status generating created_at %lld actor %s",
                    g->batch, g->batch, g->name, g->first_cat, g->ncat, g->per_cat,
                    (long long)g->created_at, g->actor_name);
    redis_batch_send(b, on_metas_written, g);
}

static void
on_space(enum redis_status status, cJSON *replies, void *arg)
{
    struct gen *g = arg;
    const cJSON *ns = cJSON_GetArrayItem(replies, 1), *count = cJSON_GetArrayItem(replies, 2);
    if (status != REDIS_DONE || !cJSON_IsNumber(count) || !cJSON_IsString(ns) ||
        strlen(ns->valuestring) >= sizeof(g->ns)) {
        cJSON_Delete(replies);
        gen_fail(g, status == REDIS_DONE ? "internal" : failure_code(status),
                 "Redis is unavailable; nothing was created");
        return;
    }
    double existing = count->valuedouble;
    snprintf(g->ns, sizeof(g->ns), "%s", ns->valuestring);
    cJSON_Delete(replies);
    if (!codegen_sparse_enough(existing + (double)g->total, (int)g->ch->conf->code_length)) {
        gen_fail(g, "too_many_codes",
                 "the code space cannot hold that many codes sparsely; use longer codes");
        return;
    }
    struct redis_batch *b = redis_batch_new(g->ch->redis);
    redis_batch_cmd(b, "INCRBY chance:seq:category %lld", g->ncat);
    redis_batch_cmd(b, "INCR chance:seq:batch");
    redis_batch_send(b, on_ids, g);
}

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
parse_request(struct gen *g, const cJSON *data, long long max_codes, char *err, size_t errlen)
{
    static const char *const fields[] = {
        "categories", "codes_per_category", "reward_min", "reward_max", "reward_step", "name",
        "prefix",     "per_user_limit",     "starts_at",  "ends_at",    "actor",       NULL};
    const char *name = NULL, *prefix = NULL, *aid, *aname, *arole;
    g->rstep = 1;
    g->limit = 1;
    if (json_check_fields(data, fields, err, errlen) != 0 ||
        json_get_int(data, "categories", true, 1, GEN_MAX_CATEGORIES, &g->ncat, err, errlen) ||
        json_get_int(data, "codes_per_category", true, 1, GEN_MAX_PER_CATEGORY, &g->per_cat, err,
                     errlen) ||
        json_get_int(data, "reward_min", true, 1, GEN_MAX_REWARD, &g->rmin, err, errlen) ||
        json_get_int(data, "reward_max", true, g->rmin, GEN_MAX_REWARD, &g->rmax, err, errlen) ||
        json_get_int(data, "reward_step", false, 1, GEN_MAX_REWARD, &g->rstep, err, errlen) ||
        json_get_int(data, "per_user_limit", false, 1, 1000000, &g->limit, err, errlen) ||
        json_get_int(data, "starts_at", false, 0, GEN_MAX_TIME, &g->starts, err, errlen) ||
        json_get_int(data, "ends_at", false, 0, GEN_MAX_TIME, &g->ends, err, errlen) ||
        json_get_string(data, "name", false, 100, &name, err, errlen) ||
        json_get_string(data, "prefix", false, CODEGEN_MAX_PREFIX, &prefix, err, errlen) ||
        chance_actor(data, &aid, &aname, &arole, err, errlen)) {
        return -1;
    }
    if (g->rmax > g->rmin && g->rstep > g->rmax - g->rmin) {
        snprintf(err, errlen, "field 'reward_step' must not exceed reward_max - reward_min");
        return -1;
    }
    if (g->ends && g->ends <= g->starts) {
        snprintf(err, errlen, "field 'ends_at' must be later than starts_at");
        return -1;
    }
    if (name && !valid_name(name)) {
        snprintf(err, errlen, "field 'name' may not contain control characters or { } : *");
        return -1;
    }
    if (prefix && codegen_prefix(prefix, g->prefix) != 0) {
        snprintf(err, errlen, "field 'prefix' must be 1 to 8 letters or digits");
        return -1;
    }
    g->total = g->ncat * g->per_cat;
    if (g->total > max_codes) {
        snprintf(err, errlen, "%lld codes exceed the limit of %lld per batch", g->total, max_codes);
        return 1;
    }
    snprintf(g->name, sizeof(g->name), "%s", name ? name : "");
    snprintf(g->actor_id, sizeof(g->actor_id), "%s", aid);
    snprintf(g->actor_name, sizeof(g->actor_name), "%s", aname);
    snprintf(g->actor_role, sizeof(g->actor_role), "%s", arole);
    return 0;
}

void
chance_generate(struct rpc_call *call, const cJSON *data, void *arg)
{
    struct chance *ch = arg;
    struct gen *g = xcalloc(1, sizeof(*g));
    char err[256];
    g->ch = ch;
    g->call = call;
    g->created_at = time_wall_ms();
    int rc = parse_request(g, data, ch->conf->max_codes_per_batch, err, sizeof(err));
    if (rc != 0) {
        rpc_reply_error(call, rc > 0 ? "too_many_codes" : "bad_request", "%s", err);
        free(g);
        return;
    }
    ch->generating++;
    /* The dataset's instance id (created by the first batch) goes into every audit event id. */
    char fresh[33];
    util_random_hex(fresh, 8);
    struct redis_batch *b = redis_batch_new(ch->redis);
    redis_batch_cmd(b, "SET chance:instance %s NX", fresh);
    redis_batch_cmd(b, "GET chance:instance");
    redis_batch_cmd(b, "HLEN chance:codes");
    redis_batch_send(b, on_space, g);
}
