/* The chance role: codes in Redis, assigned atomically, served over the NestJS TCP transport. */
#include "chance.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

#define CLAIM_ID_MAX 64
#define USER_FIELD_MAX 64

static void handle_claim(struct rpc_call *call, const cJSON *data, void *arg);

static const struct rpc_route chance_routes[] = {
    {"chance.claim", handle_claim},
    {"chance.generate", chance_generate},
    {"chance.categories", chance_categories},
    {"chance.category.update", chance_category_update},
    {"chance.codes", chance_codes},
    {"chance.code", chance_code},
    {"chance.assignments", chance_assignments},
    {"chance.release", chance_release},
};

void
chance_key(char *out, long long category, const char *what)
{
    snprintf(out, KEY_MAX, "chance:{c%lld}:%s", category, what);
}

static bool
valid_token(const char *s, size_t max)
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
    if (cJSON_IsString(it) && valid_token(it->valuestring, size - 1)) {
        snprintf(buf, size, "%s", it->valuestring);
        return 0;
    }
    snprintf(err, errlen, "field '%s' must be a non-negative integer or 1 to %zu of [A-Za-z0-9_-]",
             key, size - 1);
    return -1;
}

static bool
printable_name(const char *s)
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
    if (!printable_name(*username)) {
        snprintf(err, errlen, "field 'actor.username' has control characters");
        return -1;
    }
    return 0;
}

void
chance_reply_redis_failure(struct rpc_call *call, int status)
{
    if (status == REDIS_UNAVAILABLE) {
        rpc_reply_error(call, "unavailable", "Redis is unavailable; nothing was changed");
    } else {
        rpc_reply_error(call, "timeout", "Redis did not answer in time; the outcome is unknown");
    }
}

/* ---- chance.claim ---- */

struct claim_req {
    struct chance *ch;     /* borrowed */
    struct rpc_call *call; /* finished in on_claim_reply */
    long long category;
    char claim_id[CLAIM_ID_MAX + 1];
};

static void
on_claim_reply(enum redis_status status, cJSON *replies, void *arg)
{
    struct claim_req *req = arg;
    struct rpc_call *call = req->call;
    if (status != REDIS_DONE) {
        chance_reply_redis_failure(call, status);
        goto out;
    }
    const cJSON *r = cJSON_GetArrayItem(replies, 0);
    if (redis_reply_is_error(r)) {
        log_error("claim_script_failed", "error=\"%s\"", redis_reply_error(r));
        rpc_reply_error(call, "internal", "the claim could not be processed");
        goto out;
    }
    const cJSON *ok = cJSON_GetArrayItem(r, 0);
    if (!cJSON_IsNumber(ok) || ok->valueint != 1) {
        const cJSON *code = cJSON_GetArrayItem(r, 1);
        const char *c = cJSON_IsString(code) ? code->valuestring : "internal";
        char labels[80];
        snprintf(labels, sizeof(labels), "outcome=\"%s\"", c);
        metrics_add(req->ch->metrics, "chanced_claims_total", labels, 1);
        rpc_reply_error(call, c, "claim refused: %s", c);
        goto out;
    }
    bool replay = cJSON_GetArrayItem(r, 4)->valueint == 1;
    metrics_add(req->ch->metrics, "chanced_claims_total",
                replay ? "outcome=\"replay\"" : "outcome=\"assigned\"", 1);
    if (!replay) {
        relay_touch(req->ch->relay, req->category); /* its code.assigned event is waiting */
    }
    cJSON *resp = cJSON_CreateObject();
    cJSON_AddItemToObject(resp, "code", cJSON_Duplicate(cJSON_GetArrayItem(r, 1), 1));
    cJSON_AddNumberToObject(resp, "category", (double)req->category);
    cJSON_AddItemToObject(resp, "reward", cJSON_Duplicate(cJSON_GetArrayItem(r, 2), 1));
    cJSON_AddItemToObject(resp, "assigned_at", cJSON_Duplicate(cJSON_GetArrayItem(r, 3), 1));
    cJSON_AddStringToObject(resp, "claim_id", req->claim_id);
    cJSON_AddBoolToObject(resp, "replay", cJSON_GetArrayItem(r, 4)->valueint == 1);
    rpc_reply(call, resp);
out:
    cJSON_Delete(replies);
    free(req);
}

static void
handle_claim(struct rpc_call *call, const cJSON *data, void *arg)
{
    static const char *const fields[] = {"claim_id", "category", "user", NULL};
    static const char *const user_fields[] = {"id", "username", NULL};
    struct chance *ch = arg;
    char err[256], uid[USER_FIELD_MAX + 1];
    const char *claim_id = NULL, *username = NULL;
    long long category = 0;
    const cJSON *user;

    if (json_check_fields(data, fields, err, sizeof(err)) != 0 ||
        json_get_string(data, "claim_id", true, CLAIM_ID_MAX, &claim_id, err, sizeof(err)) != 0 ||
        json_get_int(data, "category", true, 1, JSON_MAX_SAFE_INT, &category, err, sizeof(err)) !=
            0) {
        goto bad;
    }
    if (!valid_token(claim_id, CLAIM_ID_MAX)) {
        snprintf(err, sizeof(err), "field 'claim_id' must be 1 to 64 of [A-Za-z0-9_-]");
        goto bad;
    }
    user = cJSON_GetObjectItemCaseSensitive(data, "user");
    if (user == NULL) {
        snprintf(err, sizeof(err), "field 'user' is required");
        goto bad;
    }
    if (json_check_fields(user, user_fields, err, sizeof(err)) != 0 ||
        chance_id_field(user, "id", true, uid, sizeof(uid), err, sizeof(err)) != 0 ||
        json_get_string(user, "username", true, USER_FIELD_MAX, &username, err, sizeof(err)) != 0) {
        goto bad;
    }
    if (!printable_name(username)) {
        snprintf(err, sizeof(err), "field 'user.username' has control characters");
        goto bad;
    }

    struct claim_req *req = xcalloc(1, sizeof(*req));
    req->ch = ch;
    req->call = call;
    req->category = category;
    snprintf(req->claim_id, sizeof(req->claim_id), "%s", claim_id);
    char keys[7][KEY_MAX], prefix[KEY_MAX], cat[24];
    static const char *const what[] = {"meta",   "free", "claims", "users",
                                       "events", "log",  "byuser"};
    const char *kp[7];
    for (int i = 0; i < 7; i++) {
        chance_key(keys[i], category, what[i]);
        kp[i] = keys[i];
    }
    chance_key(prefix, category, "code:");
    snprintf(cat, sizeof(cat), "%lld", category);
    const char *args[] = {claim_id, uid, username, prefix, cat};
    struct redis_batch *b = redis_batch_new(ch->redis);
    redis_batch_script(b, SCRIPT_CLAIM, 7, kp, 5, args, NULL);
    redis_batch_send(b, on_claim_reply, req);
    return;

bad:
    rpc_reply_error(call, "bad_request", "%s", err);
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
observe_rpc(const char *cmd, const char *outcome, double seconds, void *arg)
{
    struct chance *ch = arg;
    char labels[160];
    snprintf(labels, sizeof(labels), "role=\"chance\",cmd=\"%s\",outcome=\"%s\"", cmd, outcome);
    metrics_add(ch->metrics, "chanced_rpc_requests_total", labels, 1);
    snprintf(labels, sizeof(labels), "role=\"chance\",cmd=\"%s\"", cmd);
    metrics_observe(ch->metrics, "chanced_rpc_request_duration_seconds", labels, seconds);
}

static void
on_category_stats(enum redis_status status, cJSON *replies, void *arg)
{
    struct chance *ch = arg;
    ch->stats_busy = false;
    if (status == REDIS_DONE) {
        metrics_clear(ch->metrics, "chanced_codes_remaining");
        const cJSON *ids = cJSON_GetArrayItem(replies, 0), *id;
        int i = 1;
        cJSON_ArrayForEach (id, ids) {
            const cJSON *n = cJSON_GetArrayItem(replies, i++);
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
    redis_batch_cmd(b, "ZRANGE chance:categories 0 999");
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
        redis_batch_cmd(b, "ZRANGE chance:categories 0 999");
        redis_batch_send(b, on_category_ids_for_stats, ch);
    }
}

static void
describe_metrics(struct metrics *m)
{
    metrics_describe(m, "chanced_rpc_requests_total", METRICS_COUNTER,
                     "RPC requests served, by pattern and outcome (ok or an error code).");
    metrics_describe(m, "chanced_rpc_request_duration_seconds", METRICS_HISTOGRAM,
                     "Time from request to final reply, by pattern.");
    metrics_describe(m, "chanced_claims_total", METRICS_COUNTER,
                     "chance.claim results: assigned, replay, or the refusal code.");
    metrics_describe(m, "chanced_codes_remaining", METRICS_GAUGE,
                     "Unassigned codes per category (refreshed every 5 s).");
    metrics_describe(m, "chanced_dependency_up", METRICS_GAUGE,
                     "1 if the role is connected to the dependency.");
    metrics_describe(m, "chanced_generations_in_progress", METRICS_GAUGE,
                     "chance.generate batches being written.");
}

/* ---- lifecycle ---- */

static void on_stats_tick(evutil_socket_t fd, short what, void *arg);

static void
on_redis_ready(void *arg)
{
    struct chance *ch = arg;
    on_stats_tick(-1, 0, ch);
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
    struct rpc_server_opts opts = {ch->conf->chance_listen, (size_t)core->max_frame_bytes,
                                   (int)core->frame_stall_ms, (int)core->max_conns};
    ch->rpc = rpc_server_new(ch->loop, &opts, chance_routes, ARRAY_SIZE(chance_routes), ch, err,
                             sizeof(err));
    if (ch->rpc == NULL) {
        log_error("chance_listen_failed", "reason=\"%s\"", err);
        goto fail;
    }
    ch->metrics = role_metrics(ctx);
    describe_metrics(ch->metrics);
    rpc_server_set_observer(ch->rpc, observe_rpc, ch);
    ch->health = health_new(ch->loop, ch->conf->chance_health_listen, ch->metrics, chance_is_ready,
                            ch, err, sizeof(err));
    if (ch->health == NULL) {
        log_error("chance_listen_failed", "reason=\"%s\"", err);
        goto fail;
    }
    ch->stats_timer = loop_timer(ch->loop, 1000, true, on_stats_tick, ch);
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
};
