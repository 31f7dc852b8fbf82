/* The chance role: codes in Redis, assigned atomically, served over the NestJS TCP transport. */
#include "chance.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "health.h"
#include "metrics.h"
#include "core_conf.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "redis.h"
#include "relay.h"
#include "role.h"
#include "rpc_server.h"
#include "scripts.h"

#define USER_FIELD_MAX 64

static const struct rpc_route chance_routes[] = {
    {"chance.claim", chance_claim},
    {"chance.generate", chance_generate},
    {"chance.batch", chance_batch},
    {"chance.categories", chance_categories},
    {"chance.category.update", chance_category_update},
    {"chance.codes", chance_codes},
    {"chance.code", chance_code},
    {"chance.assignments", chance_assignments},
    {"chance.release", chance_release},
    {"chance.reassign", chance_reassign},
    {"chance.verify", chance_verify},
};

/* ---- keys and shared helpers ---- */

void
chance_log_minid(const struct chance *ch, char *out, size_t size)
{
    long long keep_ms = ch->conf->assignment_log_retention_s * 1000;
    if (keep_ms <= 0) {
        snprintf(out, size, "%s", "");
    } else {
        snprintf(out, size, "%lld-0", (long long)time_wall_ms() - keep_ms);
    }
}

void
chance_key(char *out, long long category, const char *what)
{
    snprintf(out, KEY_MAX, "chance:{c%lld}:%s", category, what);
}

void
chance_index_key(char *out, const char *code)
{
    /* The shard is named by the first two random characters (after any "PREFIX-"): uniform,
     * so the index spreads evenly over 961 shards and a cluster's masters. */
    const char *dash = strchr(code, '-');
    const char *r = dash ? dash + 1 : code;
    char a = r[0] ? r[0] : '_', b = r[0] && r[1] ? r[1] : '_';
    snprintf(out, KEY_MAX, "chance:{i%c%c}:codes", a, b);
}

void
chance_batch_key(char *out, long long batch)
{
    snprintf(out, KEY_MAX, "chance:{g}:batch:%lld", batch);
}

void
chance_claim_keys(char keys[8][KEY_MAX], long long category)
{
    static const char *const what[] = {"meta",  "free",   "codes", "claims",
                                       "users", "events", "log",   "byuser"};
    for (int i = 0; i < 8; i++) {
        chance_key(keys[i], category, what[i]);
    }
}

void
chance_nonce(struct chance *ch, char out[NONCE_HEX + 1])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < NONCE_HEX; i++) {
        out[i] = hex[codegen_below(&ch->rng, 16)];
    }
    out[NONCE_HEX] = '\0';
}

const char *
chance_kv_get(const cJSON *kv, const char *key)
{
    for (const cJSON *k = kv ? kv->child : NULL; k && k->next; k = k->next->next) {
        if (cJSON_IsString(k) && strcmp(k->valuestring, key) == 0 && cJSON_IsString(k->next)) {
            return k->next->valuestring;
        }
    }
    return NULL;
}

long long
chance_kv_int(const cJSON *kv, const char *key)
{
    const char *v = chance_kv_get(kv, key);
    return v ? strtoll(v, NULL, 10) : 0;
}

bool
chance_token_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max) {
        return false;
    }
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_')) {
            return false;
        }
    }
    return true;
}

int
chance_id_field(const cJSON *obj, const char *key, bool required, char *buf, size_t size, char *err,
                size_t errlen)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (it == NULL || cJSON_IsNull(it)) {
        if (required) {
            snprintf(err, errlen, "field '%s' is required", key);
            return -1;
        }
        buf[0] = '\0';
        return 0;
    }
    if (json_is_int(it) && it->valuedouble >= 0) {
        snprintf(buf, size, "%lld", (long long)it->valuedouble);
        return 0;
    }
    if (cJSON_IsString(it) && chance_token_ok(it->valuestring, size - 1)) {
        snprintf(buf, size, "%s", it->valuestring);
        return 0;
    }
    snprintf(err, errlen, "field '%s' must be a non-negative integer or 1 to %zu of [A-Za-z0-9_-]",
             key, size - 1);
    return -1;
}

bool
chance_printable(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            return false;
        }
    }
    return true;
}

int
chance_actor(const cJSON *data, const char **id, const char **username, const char **role,
             char *err, size_t errlen)
{
    static const char *const fields[] = {"id", "username", "role", NULL};
    const cJSON *actor = cJSON_GetObjectItemCaseSensitive(data, "actor");
    if (actor == NULL) {
        snprintf(err, errlen, "field 'actor' is required");
        return -1;
    }
    if (json_check_fields(actor, fields, err, errlen) != 0) {
        return -1;
    }
    const cJSON *idj = cJSON_GetObjectItemCaseSensitive(actor, "id");
    static __thread char idbuf[USER_FIELD_MAX + 1];
    if (chance_id_field(actor, "id", true, idbuf, sizeof(idbuf), err, errlen) != 0) {
        return -1;
    }
    UNUSED(idj);
    *id = idbuf;
    *role = "admin";
    if (json_get_string(actor, "username", true, USER_FIELD_MAX, username, err, errlen) != 0 ||
        json_get_string(actor, "role", false, 16, role, err, errlen) != 0) {
        return -1;
    }
    if (!chance_printable(*username)) {
        snprintf(err, errlen, "field 'actor.username' has control characters");
        return -1;
    }
    return 0;
}

void
chance_reply_redis_failure(struct rpc_call *call, enum redis_status status)
{
    if (status == REDIS_UNAVAILABLE) {
        rpc_reply_error(call, "unavailable", "Redis is unavailable; nothing was changed");
    } else {
        rpc_reply_error(call, "timeout", "Redis did not answer in time; the outcome is unknown");
    }
}

bool
chance_replies_failed(struct rpc_call *call, enum redis_status status, const cJSON *replies)
{
    if (status != REDIS_DONE) {
        chance_reply_redis_failure(call, status);
        return true;
    }
    const cJSON *r;
    cJSON_ArrayForEach (r, replies) {
        if (redis_reply_is_error(r)) {
            const char *e = redis_reply_error(r);
            log_error("redis_command_failed", "cmd=%s error=\"%.200s\"", rpc_call_cmd(call),
                      e ? e : "?");
            if (e && (strncmp(e, "OOM", 3) == 0 || strncmp(e, "READONLY", 8) == 0 ||
                      strncmp(e, "CLUSTERDOWN", 11) == 0 || strncmp(e, "LOADING", 7) == 0)) {
                rpc_reply_error(call, "unavailable", "Redis refused the write (%.80s)", e);
            } else {
                rpc_reply_error(call, "internal", "a Redis command failed");
            }
            return true;
        }
    }
    return false;
}

/* ---- health and metrics ---- */

static bool
chance_is_ready(void *arg, char *why, size_t size)
{
    struct chance *ch = arg;
    if (ch->stopping) {
        snprintf(why, size, "draining");
        return false;
    }
    if (!redis_ready(ch->redis)) {
        snprintf(why, size, "redis unreachable");
        return false;
    }
    return true;
}

static void
on_busy_told(enum redis_status status, cJSON *replies, void *arg)
{
    UNUSED(status);
    UNUSED(arg);
    cJSON_Delete(replies); /* lost, it only lets a generation run at full speed a moment */
}

void
chance_claims_busy_tell(struct chance *ch)
{
    int64_t now = time_mono_ms();
    ch->claim_seen_ms = now;
    if (ch->conf->generate_busy_share >= 100 || now - ch->busy_told_ms < CLAIMS_BUSY_MS / 2) {
        return;
    }
    ch->busy_told_ms = now;
    struct redis_batch *b = redis_batch_new(ch->redis);
    redis_batch_cmd(b, "SET %s 1 PX %d", KEY_CLAIMS_BUSY, CLAIMS_BUSY_MS);
    redis_batch_send(b, on_busy_told, NULL);
}

static void
on_claims_busy(enum redis_status status, cJSON *replies, void *arg)
{
    struct chance *ch = arg;
    ch->busy_polling = false;
    const cJSON *n = status == REDIS_DONE ? cJSON_GetArrayItem(replies, 0) : NULL;
    if (cJSON_IsNumber(n) && n->valuedouble > 0) {
        ch->busy_elsewhere_ms = time_mono_ms();
    }
    cJSON_Delete(replies);
}

bool
chance_claims_busy(struct chance *ch)
{
    int64_t now = time_mono_ms();
    if (now - ch->claim_seen_ms < CLAIMS_BUSY_MS) {
        return true; /* this instance's own claims: no need to ask */
    }
    if (!ch->busy_polling && now - ch->busy_polled_ms >= 100 && redis_ready(ch->redis)) {
        ch->busy_polling = true;
        ch->busy_polled_ms = now;
        struct redis_batch *b = redis_batch_new(ch->redis);
        redis_batch_cmd(b, "EXISTS %s", KEY_CLAIMS_BUSY);
        redis_batch_send(b, on_claims_busy, ch);
    }
    return now - ch->busy_elsewhere_ms < CLAIMS_BUSY_MS;
}

static void
on_category_stats(enum redis_status status, cJSON *replies, void *arg)
{
    struct chance *ch = arg;
    ch->stats_busy = false;
    if (status == REDIS_DONE) {
        metrics_clear(ch->metrics, "chanced_codes_remaining");
        const cJSON *ids = cJSON_GetArrayItem(replies, 0), *id, *n = ids;
        cJSON_ArrayForEach (id, ids) {
            n = n ? n->next : NULL; /* replies: the ids, then one count per id */
            char labels[64];
            snprintf(labels, sizeof(labels), "category=\"%s\"", id->valuestring);
            metrics_set(ch->metrics, "chanced_codes_remaining", labels,
                        cJSON_IsNumber(n) ? n->valuedouble : 0);
        }
    }
    cJSON_Delete(replies);
}

static void
on_category_ids_for_stats(enum redis_status status, cJSON *replies, void *arg)
{
    struct chance *ch = arg;
    const cJSON *ids = cJSON_GetArrayItem(replies, 0), *id;
    if (status != REDIS_DONE || !cJSON_IsArray(ids) || ch->stopping) {
        ch->stats_busy = false;
        cJSON_Delete(replies);
        return;
    }
    struct redis_batch *b = redis_batch_new(ch->redis);
    redis_batch_cmd(b, "ZRANGE %s 0 999", KEY_CATEGORIES);
    cJSON_ArrayForEach (id, ids) {
        char key[KEY_MAX];
        chance_key(key, atoll(id->valuestring), "free");
        redis_batch_cmd(b, "SCARD %s", key);
    }
    cJSON_Delete(replies);
    redis_batch_send(b, on_category_stats, ch);
}

static void
on_stats_tick(evutil_socket_t fd, short what, void *arg)
{
    struct chance *ch = arg;
    UNUSED(fd);
    UNUSED(what);
    metrics_set(ch->metrics, "chanced_dependency_up", "role=\"chance\",dependency=\"redis\"",
                redis_ready(ch->redis) ? 1 : 0);
    metrics_set(ch->metrics, "chanced_generations_in_progress", "", ch->generating);
    /* Per-category gauges cost a round trip per category: refresh them every 5 s. */
    if (ch->stats_ticks++ % 5 == 0 && !ch->stats_busy && redis_ready(ch->redis)) {
        ch->stats_busy = true;
        struct redis_batch *b = redis_batch_new(ch->redis);
        redis_batch_cmd(b, "ZRANGE %s 0 999", KEY_CATEGORIES);
        redis_batch_send(b, on_category_ids_for_stats, ch);
    }
}

static void
describe_metrics(struct metrics *m)
{
    metrics_describe(m, "chanced_claims_total", METRICS_COUNTER,
                     "chance.claim results: assigned, replay, or the refusal code.");
    metrics_describe(m, "chanced_codes_remaining", METRICS_GAUGE,
                     "Unassigned codes per category (refreshed every 5 s).");
    metrics_describe(m, "chanced_dependency_up", METRICS_GAUGE,
                     "1 if the role is connected to the dependency.");
    metrics_describe(
        m, "chanced_generate_chunks_total", METRICS_COUNTER,
        "Chunks of codes written by generation; mode=\"yield\": small ones with rests, "
        "while claims were being served (generate_busy_share).");
    metrics_describe(m, "chanced_generations_in_progress", METRICS_GAUGE,
                     "chance.generate batches being written.");
}

/* ---- lifecycle ---- */

static void on_stats_tick(evutil_socket_t fd, short what, void *arg);
static void on_gen_tick(evutil_socket_t fd, short what, void *arg);

static void
on_redis_ready(void *arg)
{
    struct chance *ch = arg;
    on_stats_tick(-1, 0, ch);
    gen_resume_orphans(ch); /* batches a stopped instance handed over */
    role_status(ch->ctx, "serving");
    role_ready(ch->ctx);
}

static void *
chance_start(struct role_ctx *ctx)
{
    const struct conf *conf = role_conf(ctx);
    const struct core_conf *core = conf_module_data(conf, "core");
    struct chance *ch = xcalloc(1, sizeof(*ch));
    char err[256];

    ch->ctx = ctx;
    ch->loop = role_loop(ctx);
    char host[64] = "host", rnd[9];
    gethostname(host, sizeof(host) - 1);
    util_random_hex(rnd, 4);
    snprintf(ch->instance, sizeof(ch->instance), "%.60s-%d-%s", host, (int)getpid(), rnd);
    ch->conf = conf_module_data(conf, "chance");
    struct redis_opts ro = {ch->conf->redis_url,
                            (int)ch->conf->redis_timeout_ms,
                            ch->conf->redis_tls_ca,
                            ch->conf->redis_tls_cert,
                            ch->conf->redis_tls_key,
                            script_sources,
                            SCRIPT_COUNT};
    if ((ch->redis = redis_new(ch->loop, &ro, err, sizeof(err))) == NULL) {
        log_error("chance_start_failed", "reason=\"%s\"", err);
        goto fail;
    }
    redis_on_ready(ch->redis, on_redis_ready, ch);
    ch->metrics = role_metrics(ctx);
    struct rpc_server_opts opts = {.listen = ch->conf->chance_listen,
                                   .metrics = ch->metrics,
                                   .role = "chance",
                                   .loopback_only = role_all(ctx)};
    rpc_server_opts_from_core(&opts, core); /* frame limits, per-peer caps, rpc_tls_* */
    ch->rpc = rpc_server_new(ch->loop, &opts, chance_routes, ARRAY_SIZE(chance_routes), ch, err,
                             sizeof(err));
    if (ch->rpc == NULL) {
        log_error("chance_listen_failed", "reason=\"%s\"", err);
        goto fail;
    }
    describe_metrics(ch->metrics);
    ch->health = health_new(ch->loop, ch->conf->chance_health_listen, ch->metrics, chance_is_ready,
                            ch, err, sizeof(err));
    if (ch->health == NULL) {
        log_error("chance_listen_failed", "reason=\"%s\"", err);
        goto fail;
    }
    ch->stats_timer = loop_timer(ch->loop, 1000, true, on_stats_tick, ch);
    ch->gen_timer = loop_timer(ch->loop, 5000, true, on_gen_tick, ch);
    /* The relay publishes from its own thread: RabbitMQ slow or down never blocks a claim. */
    ch->relay =
        relay_new(ch->loop, ch->redis, ch->metrics, ch->conf, conf_module_data(conf, "rmq"));
    log_info("chance_started", "listen=%s health=%s", ch->conf->chance_listen,
             ch->conf->chance_health_listen);
    return ch;

fail:
    rpc_server_free(ch->rpc);
    redis_free(ch->redis);
    free(ch);
    return NULL;
}

/* Batches whose driver died (their lease ran out) are resumed here. */
static void
on_gen_tick(evutil_socket_t fd, short what, void *arg)
{
    UNUSED(fd);
    UNUSED(what);
    gen_resume_orphans(arg);
}

static void
on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
    struct chance *ch = arg;
    UNUSED(fd);
    UNUSED(what);
    if (rpc_server_inflight(ch->rpc) == 0 && ch->generating == 0 &&
        rpc_server_pending_output(ch->rpc) == 0) {
        event_del(ch->drain_timer);
        role_done(ch->ctx);
    }
}

static void
chance_stop(void *state)
{
    struct chance *ch = state;
    ch->stopping = true; /* /readyz answers 503 from now on */
    rpc_server_stop_accepting(ch->rpc);
    /* Generation drivers stop at their next step; another instance (or the next run) resumes
     * their batches once the leases expire. */
    gen_stop_all(ch);
    /* In-flight claims finish (their Redis replies are on the way); then the loop ends. */
    ch->drain_timer = loop_timer(ch->loop, 20, true, on_drain_tick, ch);
}

static void
chance_free(void *state)
{
    struct chance *ch = state;
    if (ch->drain_timer) {
        event_free(ch->drain_timer);
    }
    if (ch->stats_timer) {
        event_free(ch->stats_timer);
    }
    if (ch->gen_timer) {
        event_free(ch->gen_timer);
    }
    health_free(ch->health);
    /* Redis first: its pending callbacks finish their calls while the server and the relay
     * still exist. */
    redis_free(ch->redis);
    relay_free(ch->relay);
    rpc_server_free(ch->rpc);
    util_wipe(&ch->rng, sizeof(ch->rng));
    free(ch);
}

const struct role role_chance = {
    .name = "chance",
    .conf = &chance_conf_module,
    .start = chance_start,
    .stop = chance_stop,
    .free = chance_free,
    .health_key = "chance_health_listen",
    .rpc_listen_key = "chance_listen",
};
