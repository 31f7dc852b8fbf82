/* chance.categories and chance.category.update: the categories' figures and settings. */
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

#define PAGE_DEFAULT 100
#define PAGE_MAX 1000
#define MAX_TIME 253402300799000LL

static void
add_int_or_null(cJSON *o, const char *name, long long v)
{
    cJSON_AddItemToObject(o, name, v ? cJSON_CreateNumber((double)v) : cJSON_CreateNull());
}

cJSON *
chance_category_json(long long id, const cJSON *kv, long long remaining, long long now)
{
    cJSON *o = cJSON_CreateObject();
    long long starts = chance_kv_int(kv, "starts_at"), ends = chance_kv_int(kv, "ends_at");
    bool enabled = chance_kv_int(kv, "enabled") == 1;
    bool in_window = (starts == 0 || now >= starts) && (ends == 0 || now < ends);
    const char *name = chance_kv_get(kv, "name");
    cJSON_AddNumberToObject(o, "id", (double)id);
    cJSON_AddStringToObject(o, "name", name ? name : "");
    cJSON_AddNumberToObject(o, "batch", (double)chance_kv_int(kv, "batch"));
    cJSON_AddNumberToObject(o, "total", (double)chance_kv_int(kv, "total"));
    cJSON_AddNumberToObject(o, "remaining", (double)remaining);
    static const char *const nums[] = {"assigned",   "paid_out",    "total_reward",  "reward_min",
                                       "reward_max", "reward_step", "per_user_limit"};
    for (size_t i = 0; i < ARRAY_SIZE(nums); i++) {
        cJSON_AddNumberToObject(o, nums[i], (double)chance_kv_int(kv, nums[i]));
    }
    add_int_or_null(o, "starts_at", starts);
    add_int_or_null(o, "ends_at", ends);
    cJSON_AddBoolToObject(o, "enabled", enabled);
    cJSON_AddBoolToObject(o, "claimable", enabled && in_window && remaining > 0);
    cJSON_AddNumberToObject(o, "created_at", (double)chance_kv_int(kv, "created_at"));
    /* The assignment log's newest entry: ids are time-based, so a Redis that forgot writes and
     * then logged new ones never repeats an id the reconciler saw (counts can repeat). */
    const char *log_last = chance_kv_get(kv, "log_last");
    cJSON_AddItemToObject(o, "log_last",
                          log_last ? cJSON_CreateString(log_last) : cJSON_CreateNull());
    return o;
}

/* ---- chance.categories ---- */

struct list_query {
    struct chance *ch;     /* borrowed */
    struct rpc_call *call; /* answered at the end */
    long long limit, after;
    char user[65];  /* with user_claims for this user, or "" */
    bool claimable; /* only claimable categories */
    cJSON *ids;     /* ids of the page */
};

static void
list_free(struct list_query *q)
{
    cJSON_Delete(q->ids);
    free(q);
}

static void
on_details(enum redis_status status, cJSON *replies, void *arg)
{
    struct list_query *q = arg;
    if (chance_replies_failed(q->call, status, replies)) {
        goto out;
    }
    int per = q->user[0] ? 3 : 2;
    long long now = time_wall_ms(), last = 0;
    cJSON *items = cJSON_CreateArray();
    int n = cJSON_GetArraySize(q->ids), nrep = 0;
    const cJSON **rep = json_items(replies, &nrep);
    const cJSON *idj = q->ids->child;
    for (int i = 0; i < n && i < q->limit && (i + 1) * per <= nrep; i++, idj = idj->next) {
        long long id = cJSON_IsString(idj) ? strtoll(idj->valuestring, NULL, 10) : 0;
        const cJSON *kv = rep[i * per];
        const cJSON *rem = rep[i * per + 1];
        last = id;
        if (id < 1 || cJSON_GetArraySize(kv) == 0 || !cJSON_IsNumber(rem)) {
            continue;
        }
        cJSON *c = chance_category_json(id, kv, (long long)rem->valuedouble, now);
        if (q->user[0]) {
            const cJSON *mine = rep[i * per + 2];
            cJSON_AddNumberToObject(c, "user_claims",
                                    cJSON_IsString(mine) ? atof(mine->valuestring) : 0);
        }
        if (q->claimable && !cJSON_IsTrue(cJSON_GetObjectItem(c, "claimable"))) {
            cJSON_Delete(c);
            continue;
        }
        cJSON_AddItemToArray(items, c);
    }
    free(rep);
    cJSON *resp = cJSON_CreateObject();
    cJSON_AddItemToObject(resp, "items", items);
    cJSON_AddItemToObject(resp, "next_cursor",
                          n > q->limit ? cJSON_CreateNumber((double)last) : cJSON_CreateNull());
    rpc_reply(q->call, resp);
out:
    cJSON_Delete(replies);
    list_free(q);
}

static void
on_ids(enum redis_status status, cJSON *replies, void *arg)
{
    struct list_query *q = arg;
    if (chance_replies_failed(q->call, status, replies)) {
        cJSON_Delete(replies);
        list_free(q);
        return;
    }
    q->ids = cJSON_DetachItemFromArray(replies, 0);
    cJSON_Delete(replies);
    int n = cJSON_GetArraySize(q->ids);
    if (n == 0) {
        cJSON *resp = cJSON_CreateObject();
        cJSON_AddArrayToObject(resp, "items");
        cJSON_AddNullToObject(resp, "next_cursor");
        rpc_reply(q->call, resp);
        list_free(q);
        return;
    }
    struct redis_batch *b = redis_batch_new(q->ch->redis);
    char key[KEY_MAX];
    const cJSON *idj = q->ids->child;
    for (int i = 0; i < n && i < q->limit; i++, idj = idj->next) {
        long long id = cJSON_IsString(idj) ? strtoll(idj->valuestring, NULL, 10) : 0;
        chance_key(key, id, "meta");
        redis_batch_cmd(b, "HGETALL %s", key);
        chance_key(key, id, "free");
        redis_batch_cmd(b, "SCARD %s", key);
        if (q->user[0]) {
            chance_key(key, id, "users");
            redis_batch_cmd(b, "HGET %s %s", key, q->user);
        }
    }
    redis_batch_send(b, on_details, q);
}

void
chance_categories(struct rpc_call *call, const cJSON *data, void *arg)
{
    static const char *const fields[] = {"claimable", "after", "limit", "user", NULL};
    struct list_query *q = xcalloc(1, sizeof(*q));
    char err[256];
    q->ch = arg;
    q->call = call;
    q->limit = PAGE_DEFAULT;
    if ((data && json_check_fields(data, fields, err, sizeof(err))) ||
        json_get_int(data, "limit", false, 1, PAGE_MAX, &q->limit, err, sizeof(err)) ||
        json_get_int(data, "after", false, 0, JSON_MAX_SAFE_INT, &q->after, err, sizeof(err)) ||
        json_get_bool(data, "claimable", false, &q->claimable, err, sizeof(err)) ||
        chance_id_field(data, "user", false, q->user, sizeof(q->user), err, sizeof(err))) {
        rpc_reply_error(call, "bad_request", "%s", err);
        list_free(q);
        return;
    }
    struct redis_batch *b = redis_batch_new(q->ch->redis);
    redis_batch_cmd(b, "ZRANGEBYSCORE %s (%lld +inf LIMIT 0 %lld", KEY_CATEGORIES, q->after,
                    q->limit + 1);
    redis_batch_send(b, on_ids, q);
}

/* ---- chance.category.update ---- */

struct update {
    struct chance *ch;     /* borrowed */
    struct rpc_call *call; /* answered at the end */
    long long category;
    bool has_enabled, has_limit, has_starts, has_ends;
    bool enabled;
    long long limit, starts, ends;
    char actor_id[65], actor_name[65], actor_role[17];
};

static void
on_updated_meta(enum redis_status status, cJSON *replies, void *arg)
{
    struct update *u = arg;
    if (!chance_replies_failed(u->call, status, replies)) {
        const cJSON *kv = cJSON_GetArrayItem(replies, 0);
        const cJSON *rem = cJSON_GetArrayItem(replies, 1);
        rpc_reply(u->call,
                  chance_category_json(u->category, kv,
                                       cJSON_IsNumber(rem) ? (long long)rem->valuedouble : 0,
                                       time_wall_ms()));
    }
    cJSON_Delete(replies);
    free(u);
}

static void
on_update_script(enum redis_status status, cJSON *replies, void *arg)
{
    struct update *u = arg;
    if (chance_replies_failed(u->call, status, replies)) {
        cJSON_Delete(replies);
        free(u);
        return;
    }
    const cJSON *r = cJSON_GetArrayItem(replies, 0);
    bool found = cJSON_IsNumber(r) && r->valuedouble == 1;
    cJSON_Delete(replies);
    if (!found) {
        rpc_reply_error(u->call, "category_not_found", "category %lld does not exist", u->category);
        free(u);
        return;
    }
    relay_touch(u->ch->relay, u->category); /* its category.changed event */
    char key[KEY_MAX];
    struct redis_batch *b = redis_batch_new(u->ch->redis);
    chance_key(key, u->category, "meta");
    redis_batch_cmd(b, "HGETALL %s", key);
    chance_key(key, u->category, "free");
    redis_batch_cmd(b, "SCARD %s", key);
    redis_batch_send(b, on_updated_meta, u);
}

static void
on_update_current(enum redis_status status, cJSON *replies, void *arg)
{
    struct update *u = arg;
    if (chance_replies_failed(u->call, status, replies)) {
        cJSON_Delete(replies);
        free(u);
        return;
    }
    const cJSON *cur = cJSON_GetArrayItem(replies, 0);
    const cJSON *st = cJSON_GetArrayItem(cur, 0);
    if (!cJSON_IsString(st) || strcmp(st->valuestring, "ready") != 0) {
        cJSON_Delete(replies);
        rpc_reply_error(u->call, "category_not_found", "category %lld does not exist", u->category);
        free(u);
        return;
    }
    const cJSON *s = cJSON_GetArrayItem(cur, 1), *e = cJSON_GetArrayItem(cur, 2);
    long long starts = u->has_starts ? u->starts : (cJSON_IsString(s) ? atoll(s->valuestring) : 0);
    long long ends = u->has_ends ? u->ends : (cJSON_IsString(e) ? atoll(e->valuestring) : 0);
    cJSON_Delete(replies);
    if (ends && ends <= starts) {
        rpc_reply_error(u->call, "bad_request", "ends_at must be later than starts_at");
        free(u);
        return;
    }
    char key[2][KEY_MAX], cat[24], v[3][24], nonce[NONCE_HEX + 1];
    chance_key(key[0], u->category, "meta");
    chance_key(key[1], u->category, "events");
    snprintf(cat, sizeof(cat), "%lld", u->category);
    chance_nonce(u->ch, nonce);
    const char *keys[] = {key[0], key[1]};
    const char *args[13] = {cat, u->actor_id, u->actor_name, u->actor_role, nonce};
    int n = 5;
    if (u->has_enabled) {
        args[n++] = "enabled";
        args[n++] = u->enabled ? "1" : "0";
    }
    if (u->has_limit) {
        snprintf(v[0], sizeof(v[0]), "%lld", u->limit);
        args[n++] = "per_user_limit";
        args[n++] = v[0];
    }
    if (u->has_starts) {
        snprintf(v[1], sizeof(v[1]), "%lld", u->starts);
        args[n++] = "starts_at";
        args[n++] = u->starts ? v[1] : "0";
    }
    if (u->has_ends) {
        snprintf(v[2], sizeof(v[2]), "%lld", u->ends);
        args[n++] = "ends_at";
        args[n++] = u->ends ? v[2] : "0";
    }
    struct redis_batch *b = redis_batch_new(u->ch->redis);
    redis_batch_script(b, SCRIPT_UPDATE, 2, keys, n, args, NULL);
    redis_batch_send(b, on_update_script, u);
}

/* A time that may be null (no bound): has is set when the key is present at all. */
static int
nullable_time(const cJSON *data, const char *key, bool *has, long long *out, char *err,
              size_t errlen)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(data, key);
    if (it == NULL) {
        return 0;
    }
    *has = true;
    if (cJSON_IsNull(it)) {
        *out = 0;
        return 0;
    }
    return json_get_int(data, key, true, 0, MAX_TIME, out, err, errlen);
}

void
chance_category_update(struct rpc_call *call, const cJSON *data, void *arg)
{
    static const char *const fields[] = {
        "category", "enabled", "per_user_limit", "starts_at", "ends_at", "actor", NULL};
    struct update *u = xcalloc(1, sizeof(*u));
    const char *aid, *aname, *arole;
    char err[256];
    u->ch = arg;
    u->call = call;
    if (json_check_fields(data, fields, err, sizeof(err)) ||
        json_get_int(data, "category", true, 1, JSON_MAX_SAFE_INT, &u->category, err,
                     sizeof(err)) ||
        json_get_int(data, "per_user_limit", false, 1, 1000000, &u->limit, err, sizeof(err)) ||
        json_get_bool(data, "enabled", false, &u->enabled, err, sizeof(err)) ||
        nullable_time(data, "starts_at", &u->has_starts, &u->starts, err, sizeof(err)) ||
        nullable_time(data, "ends_at", &u->has_ends, &u->ends, err, sizeof(err)) ||
        chance_actor(data, &aid, &aname, &arole, err, sizeof(err))) {
        goto bad;
    }
    u->has_enabled = cJSON_HasObjectItem(data, "enabled");
    u->has_limit = cJSON_HasObjectItem(data, "per_user_limit");
    if (!u->has_enabled && !u->has_limit && !u->has_starts && !u->has_ends) {
        snprintf(err, sizeof(err),
                 "nothing to change: give enabled, per_user_limit, starts_at or ends_at");
        goto bad;
    }
    snprintf(u->actor_id, sizeof(u->actor_id), "%s", aid);
    snprintf(u->actor_name, sizeof(u->actor_name), "%s", aname);
    snprintf(u->actor_role, sizeof(u->actor_role), "%s", arole);
    char key[KEY_MAX];
    chance_key(key, u->category, "meta");
    struct redis_batch *b = redis_batch_new(u->ch->redis);
    redis_batch_cmd(b, "HMGET %s status starts_at ends_at", key);
    redis_batch_send(b, on_update_current, u);
    return;
bad:
    rpc_reply_error(call, "bad_request", "%s", err);
    free(u);
}
