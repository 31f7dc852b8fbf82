/*
 * The chance role's reads and admin changes: categories, category updates, code search, one
 * code, the assignment log for the gateway's reconciler, and release.
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

#define PAGE_DEFAULT 100
#define PAGE_MAX 1000
#define MAX_TIME 253402300799000LL

/* ---- helpers over HGETALL replies ([k1, v1, k2, v2, ...]) ---- */

static const char *
kv_get(const cJSON *kv, const char *key)
{
    for (const cJSON *k = kv ? kv->child : NULL; k && k->next; k = k->next->next) {
        if (cJSON_IsString(k) && strcmp(k->valuestring, key) == 0 && cJSON_IsString(k->next)) {
            return k->next->valuestring;
        }
    }
    return NULL;
}

static long long
kv_int(const cJSON *kv, const char *key)
{
    const char *v = kv_get(kv, key);
    return v ? strtoll(v, NULL, 10) : 0;
}

static void
add_int_or_null(cJSON *o, const char *name, long long v)
{
    cJSON_AddItemToObject(o, name, v ? cJSON_CreateNumber((double)v) : cJSON_CreateNull());
}

cJSON *
chance_category_json(long long id, const cJSON *kv, long long remaining, long long now)
{
    cJSON *o = cJSON_CreateObject();
    long long starts = kv_int(kv, "starts_at"), ends = kv_int(kv, "ends_at");
    bool enabled = kv_int(kv, "enabled") == 1;
    bool in_window = (starts == 0 || now >= starts) && (ends == 0 || now < ends);
    const char *name = kv_get(kv, "name");
    cJSON_AddNumberToObject(o, "id", (double)id);
    cJSON_AddStringToObject(o, "name", name ? name : "");
    cJSON_AddNumberToObject(o, "batch", (double)kv_int(kv, "batch"));
    cJSON_AddNumberToObject(o, "total", (double)kv_int(kv, "total"));
    cJSON_AddNumberToObject(o, "remaining", (double)remaining);
    cJSON_AddNumberToObject(o, "assigned", (double)kv_int(kv, "assigned"));
    cJSON_AddNumberToObject(o, "paid_out", (double)kv_int(kv, "paid_out"));
    cJSON_AddNumberToObject(o, "total_reward", (double)kv_int(kv, "total_reward"));
    cJSON_AddNumberToObject(o, "reward_min", (double)kv_int(kv, "reward_min"));
    cJSON_AddNumberToObject(o, "reward_max", (double)kv_int(kv, "reward_max"));
    cJSON_AddNumberToObject(o, "reward_step", (double)kv_int(kv, "reward_step"));
    cJSON_AddNumberToObject(o, "per_user_limit", (double)kv_int(kv, "per_user_limit"));
    add_int_or_null(o, "starts_at", starts);
    add_int_or_null(o, "ends_at", ends);
    cJSON_AddBoolToObject(o, "enabled", enabled);
    cJSON_AddBoolToObject(o, "claimable", enabled && in_window && remaining > 0);
    cJSON_AddNumberToObject(o, "created_at", (double)kv_int(kv, "created_at"));
    return o;
}

static cJSON *
code_json(const cJSON *kv)
{
    cJSON *o = cJSON_CreateObject();
    const char *v;
    cJSON_AddStringToObject(o, "code", kv_get(kv, "code") ? kv_get(kv, "code") : "");
    cJSON_AddNumberToObject(o, "category", (double)kv_int(kv, "category"));
    cJSON_AddNumberToObject(o, "reward", (double)kv_int(kv, "reward"));
    cJSON_AddStringToObject(o, "status", kv_get(kv, "status") ? kv_get(kv, "status") : "");
    if ((v = kv_get(kv, "user_id")) != NULL) {
        cJSON_AddStringToObject(o, "user_id", v);
        cJSON_AddStringToObject(o, "username",
                                kv_get(kv, "username") ? kv_get(kv, "username") : "");
        cJSON_AddStringToObject(o, "claim_id",
                                kv_get(kv, "claim_id") ? kv_get(kv, "claim_id") : "");
        cJSON_AddNumberToObject(o, "assigned_at", (double)kv_int(kv, "assigned_at"));
    }
    return o;
}

static int
page_limit(const cJSON *data, long long *limit, char *err, size_t errlen)
{
    *limit = PAGE_DEFAULT;
    return json_get_int(data, "limit", false, 1, PAGE_MAX, limit, err, errlen);
}

/* A request that holds its call across Redis round trips. */
struct query {
    struct chance *ch;
    struct rpc_call *call;
    long long category, limit, after;
    char user[65];
    char status[16];
    char cursor[64];
    bool claimable;
    cJSON *items; /* result being built */
    cJSON *ids;   /* ids fetched in the first step */
};

static struct query *
query_new(struct chance *ch, struct rpc_call *call)
{
    struct query *q = xcalloc(1, sizeof(*q));
    q->ch = ch;
    q->call = call;
    return q;
}

static void
query_free(struct query *q)
{
    cJSON_Delete(q->items);
    cJSON_Delete(q->ids);
    free(q);
}

static bool
batch_failed(struct query *q, int status, cJSON *replies)
{
    if (status != REDIS_DONE) {
        chance_reply_redis_failure(q->call, status);
        cJSON_Delete(replies);
        query_free(q);
        return true;
    }
    const cJSON *r;
    cJSON_ArrayForEach (r, replies) {
        if (redis_reply_is_error(r)) {
            log_error("redis_command_failed", "cmd=%s error=\"%s\"", rpc_call_cmd(q->call),
                      redis_reply_error(r));
            rpc_reply_error(q->call, "internal", "a Redis command failed");
            cJSON_Delete(replies);
            query_free(q);
            return true;
        }
    }
    return false;
}

/* ---- chance.categories ---- */

static void
on_category_details(enum redis_status status, cJSON *replies, void *arg)
{
    struct query *q = arg;
    if (batch_failed(q, status, replies)) {
        return;
    }
    int per = q->user[0] ? 3 : 2;
    long long now = time_wall_ms(), last = 0;
    cJSON *items = cJSON_CreateArray();
    int n = cJSON_GetArraySize(q->ids);
    for (int i = 0; i < n && i < q->limit; i++) {
        long long id = strtoll(cJSON_GetArrayItem(q->ids, i)->valuestring, NULL, 10);
        const cJSON *kv = cJSON_GetArrayItem(replies, i * per);
        const cJSON *rem = cJSON_GetArrayItem(replies, i * per + 1);
        last = id;
        if (cJSON_GetArraySize(kv) == 0) {
            continue;
        }
        cJSON *c = chance_category_json(id, kv, (long long)rem->valuedouble, now);
        if (q->user[0]) {
            const cJSON *mine = cJSON_GetArrayItem(replies, i * per + 2);
            cJSON_AddNumberToObject(c, "user_claims",
                                    cJSON_IsString(mine) ? atof(mine->valuestring) : 0);
        }
        if (q->claimable && !cJSON_IsTrue(cJSON_GetObjectItem(c, "claimable"))) {
            cJSON_Delete(c);
            continue;
        }
        cJSON_AddItemToArray(items, c);
    }
    cJSON *resp = cJSON_CreateObject();
    cJSON_AddItemToObject(resp, "items", items);
    cJSON_AddItemToObject(resp, "next_cursor",
                          n > q->limit ? cJSON_CreateNumber((double)last) : cJSON_CreateNull());
    rpc_reply(q->call, resp);
    cJSON_Delete(replies);
    query_free(q);
}

static void
on_category_ids(enum redis_status status, cJSON *replies, void *arg)
{
    struct query *q = arg;
    if (batch_failed(q, status, replies)) {
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
        query_free(q);
        return;
    }
    struct redis_batch *b = redis_batch_new(q->ch->redis);
    char key[KEY_MAX];
    for (int i = 0; i < n && i < q->limit; i++) {
        long long id = strtoll(cJSON_GetArrayItem(q->ids, i)->valuestring, NULL, 10);
        chance_key(key, id, "meta");
        redis_batch_cmd(b, "HGETALL %s", key);
        chance_key(key, id, "free");
        redis_batch_cmd(b, "SCARD %s", key);
        if (q->user[0]) {
            chance_key(key, id, "users");
            redis_batch_cmd(b, "HGET %s %s", key, q->user);
        }
    }
    redis_batch_send(b, on_category_details, q);
}

void
chance_categories(struct rpc_call *call, const cJSON *data, void *arg)
{
    static const char *const fields[] = {"claimable", "after", "limit", "user", NULL};
    struct query *q = query_new(arg, call);
    char err[256];
    if (json_check_fields(data ? data : cJSON_GetObjectItem(NULL, ""), fields, err, sizeof(err)) &&
        data != NULL) {
        goto bad;
    }
    if (page_limit(data, &q->limit, err, sizeof(err)) ||
        json_get_int(data, "after", false, 0, JSON_MAX_SAFE_INT, &q->after, err, sizeof(err)) ||
        json_get_bool(data, "claimable", false, &q->claimable, err, sizeof(err)) ||
        chance_id_field(data, "user", false, q->user, sizeof(q->user), err, sizeof(err))) {
        goto bad;
    }
    struct redis_batch *b = redis_batch_new(q->ch->redis);
    redis_batch_cmd(b, "ZRANGEBYSCORE chance:categories (%lld +inf LIMIT 0 %lld", q->after,
                    q->limit + 1);
    redis_batch_send(b, on_category_ids, q);
    return;
bad:
    rpc_reply_error(call, "bad_request", "%s", err);
    query_free(q);
}

/* ---- chance.category.update ---- */

struct update {
    struct query q;
    int has_enabled, has_limit, has_starts, has_ends;
    bool enabled;
    long long limit, starts, ends;
    char actor_id[65], actor_name[65], actor_role[17];
};

static void
on_updated_meta(enum redis_status status, cJSON *replies, void *arg)
{
    struct query *q = arg;
    if (batch_failed(q, status, replies)) {
        return;
    }
    const cJSON *kv = cJSON_GetArrayItem(replies, 0);
    const cJSON *rem = cJSON_GetArrayItem(replies, 1);
    rpc_reply(q->call,
              chance_category_json(q->category, kv, (long long)rem->valuedouble, time_wall_ms()));
    cJSON_Delete(replies);
    query_free(q);
}

static void
fetch_category_reply(struct query *q, redis_done_fn fn)
{
    char key[KEY_MAX];
    struct redis_batch *b = redis_batch_new(q->ch->redis);
    chance_key(key, q->category, "meta");
    redis_batch_cmd(b, "HGETALL %s", key);
    chance_key(key, q->category, "free");
    redis_batch_cmd(b, "SCARD %s", key);
    redis_batch_send(b, fn, q);
}

static void
on_update_script(enum redis_status status, cJSON *replies, void *arg)
{
    struct query *q = arg;
    if (batch_failed(q, status, replies)) {
        return;
    }
    bool found = cJSON_GetArrayItem(replies, 0)->valuedouble == 1;
    cJSON_Delete(replies);
    if (!found) {
        rpc_reply_error(q->call, "category_not_found", "category %lld does not exist", q->category);
        query_free(q);
        return;
    }
    relay_touch(q->ch->relay, q->category); /* its category.changed event */
    fetch_category_reply(q, on_updated_meta);
}

static void
on_update_current(enum redis_status status, cJSON *replies, void *arg)
{
    struct update *u = arg;
    struct query *q = &u->q;
    if (batch_failed(q, status, replies)) {
        return;
    }
    const cJSON *cur = cJSON_GetArrayItem(replies, 0);
    const cJSON *st = cJSON_GetArrayItem(cur, 0);
    if (!cJSON_IsString(st) || strcmp(st->valuestring, "ready") != 0) {
        cJSON_Delete(replies);
        rpc_reply_error(q->call, "category_not_found", "category %lld does not exist", q->category);
        query_free(q);
        return;
    }
    const cJSON *s = cJSON_GetArrayItem(cur, 1), *e = cJSON_GetArrayItem(cur, 2);
    long long starts = u->has_starts ? u->starts : (cJSON_IsString(s) ? atoll(s->valuestring) : 0);
    long long ends = u->has_ends ? u->ends : (cJSON_IsString(e) ? atoll(e->valuestring) : 0);
    cJSON_Delete(replies);
    if (ends && ends <= starts) {
        rpc_reply_error(q->call, "bad_request", "ends_at must be later than starts_at");
        query_free(q);
        return;
    }
    char key[2][KEY_MAX], cat[24], v[4][24];
    chance_key(key[0], q->category, "meta");
    chance_key(key[1], q->category, "events");
    snprintf(cat, sizeof(cat), "%lld", q->category);
    const char *keys[] = {key[0], key[1]};
    const char *args[13] = {cat, u->actor_id, u->actor_name, u->actor_role};
    int n = 4;
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
    struct redis_batch *b = redis_batch_new(q->ch->redis);
    redis_batch_script(b, SCRIPT_UPDATE, 2, keys, n, args, NULL);
    redis_batch_send(b, on_update_script, q);
}

static int
nullable_time(const cJSON *data, const char *key, int *has, long long *out, char *err,
              size_t errlen)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(data, key);
    if (it == NULL) {
        return 0;
    }
    *has = 1;
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
    struct query *q = &u->q;
    const char *aid, *aname, *arole;
    char err[256];
    q->ch = arg;
    q->call = call;
    if (json_check_fields(data, fields, err, sizeof(err)) ||
        json_get_int(data, "category", true, 1, JSON_MAX_SAFE_INT, &q->category, err,
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
                 "nothing to change: give enabled, per_user_limit, starts_at "
                 "or ends_at");
        goto bad;
    }
    snprintf(u->actor_id, sizeof(u->actor_id), "%s", aid);
    snprintf(u->actor_name, sizeof(u->actor_name), "%s", aname);
    snprintf(u->actor_role, sizeof(u->actor_role), "%s", arole);
    char key[KEY_MAX];
    chance_key(key, q->category, "meta");
    struct redis_batch *b = redis_batch_new(q->ch->redis);
    redis_batch_cmd(b, "HMGET %s status starts_at ends_at", key);
    redis_batch_send(b, on_update_current, u);
    return;
bad:
    rpc_reply_error(call, "bad_request", "%s", err);
    free(u);
}

/* ---- chance.codes and chance.code ---- */

static void
on_code_hashes(enum redis_status status, cJSON *replies, void *arg)
{
    struct query *q = arg;
    if (batch_failed(q, status, replies)) {
        return;
    }
    cJSON *items = cJSON_CreateArray();
    const cJSON *kv;
    cJSON_ArrayForEach (kv, replies) {
        if (cJSON_GetArraySize(kv) == 0) {
            continue;
        }
        const char *st = kv_get(kv, "status");
        if (q->status[0] && (st == NULL || strcmp(st, q->status) != 0)) {
            continue;
        }
        if (q->user[0] &&
            (kv_get(kv, "user_id") == NULL || strcmp(kv_get(kv, "user_id"), q->user) != 0)) {
            continue;
        }
        cJSON_AddItemToArray(items, code_json(kv));
    }
    cJSON *resp = cJSON_CreateObject();
    cJSON_AddItemToObject(resp, "items", items);
    cJSON_AddItemToObject(resp, "next_cursor",
                          q->cursor[0] ? cJSON_CreateString(q->cursor) : cJSON_CreateNull());
    rpc_reply(q->call, resp);
    cJSON_Delete(replies);
    query_free(q);
}

/* Fetches the hashes of `codes` (an array of strings) in category q->category. */
static void
fetch_codes(struct query *q, const cJSON *codes)
{
    char prefix[KEY_MAX];
    chance_key(prefix, q->category, "code:");
    struct redis_batch *b = redis_batch_new(q->ch->redis);
    const cJSON *c;
    int n = 0;
    cJSON_ArrayForEach (c, codes) {
        if (cJSON_IsString(c)) {
            redis_batch_cmd(b, "HGETALL %s%s", prefix, c->valuestring);
            n++;
        }
    }
    if (n == 0) {
        redis_batch_cmd(b, "HGETALL chance:none"); /* keeps one shape: an empty page */
    }
    redis_batch_send(b, on_code_hashes, q);
}

static void
on_code_page(enum redis_status status, cJSON *replies, void *arg)
{
    struct query *q = arg;
    if (batch_failed(q, status, replies)) {
        return;
    }
    const cJSON *r = cJSON_GetArrayItem(replies, 0);
    cJSON *codes = cJSON_CreateArray();
    q->cursor[0] = '\0';
    if (q->cursor[63] == 'f') { /* SSCAN page: [cursor, [codes...]] */
        const cJSON *next = cJSON_GetArrayItem(r, 0), *list = cJSON_GetArrayItem(r, 1);
        int n = cJSON_GetArraySize(list);
        long long skip = q->after;
        long long i = 0;
        const cJSON *c;
        cJSON_ArrayForEach (c, list) {
            if (i >= skip && cJSON_GetArraySize(codes) < q->limit) {
                cJSON_AddItemToArray(codes, cJSON_Duplicate(c, 1));
            }
            i++;
        }
        if (skip + q->limit < n) {
            /* The same SSCAN step holds more than a page: resume inside it. */
            snprintf(q->cursor, sizeof(q->cursor) - 1, "f:%s:%lld", q->status, skip + q->limit);
            snprintf(q->cursor, sizeof(q->cursor) - 1, "f:%s:%lld",
                     q->ids ? cJSON_GetArrayItem(q->ids, 0)->valuestring : "0", skip + q->limit);
        } else if (cJSON_IsString(next) && strcmp(next->valuestring, "0") != 0) {
            snprintf(q->cursor, sizeof(q->cursor) - 1, "f:%s:0", next->valuestring);
        } else if (!q->status[0]) {
            snprintf(q->cursor, sizeof(q->cursor) - 1, "l:0-0");
        }
    } else { /* log page: [[id, [k, v, ...]], ...] */
        const cJSON *e;
        const char *last = NULL;
        int n = 0;
        cJSON_ArrayForEach (e, r) {
            const cJSON *id = cJSON_GetArrayItem(e, 0), *kv = cJSON_GetArrayItem(e, 1);
            last = id->valuestring;
            n++;
            const char *t = kv_get(kv, "t");
            if (t && strcmp(t, "assigned") == 0) {
                cJSON_AddItemToArray(codes, cJSON_CreateString(kv_get(kv, "code")));
            }
        }
        if (n == q->limit && last) {
            snprintf(q->cursor, sizeof(q->cursor) - 1, "l:%s", last);
        }
        /* Only codes still assigned are listed (a released one shows up in the free set). */
        if (!q->status[0]) {
            snprintf(q->status, sizeof(q->status), "assigned");
        }
    }
    cJSON_Delete(replies);
    fetch_codes(q, codes);
    cJSON_Delete(codes);
}

static bool
parse_stream_id(const char *s)
{
    char *end;
    strtoull(s, &end, 10);
    if (end == s || *end != '-') {
        return false;
    }
    const char *p = end + 1;
    strtoull(p, &end, 10);
    return end != p && *end == '\0' && strlen(s) < 48;
}

/* Cursor grammar: "f:<sscan cursor>:<skip>" (free set) or "l:<stream id>" (assignment log). */
static int
parse_codes_cursor(struct query *q, const char *cursor, char *sscan, size_t size)
{
    if (strncmp(cursor, "f:", 2) == 0) {
        const char *colon = strchr(cursor + 2, ':');
        if (colon == NULL || colon == cursor + 2 || (size_t)(colon - cursor - 2) >= size) {
            return -1;
        }
        memcpy(sscan, cursor + 2, (size_t)(colon - cursor - 2));
        sscan[colon - cursor - 2] = '\0';
        char *end;
        strtoull(sscan, &end, 10);
        if (*end != '\0') {
            return -1;
        }
        q->after = strtoll(colon + 1, &end, 10);
        return *end == '\0' && q->after >= 0 && q->after < 1000000 ? 'f' : -1;
    }
    if (strncmp(cursor, "l:", 2) == 0 && parse_stream_id(cursor + 2)) {
        snprintf(sscan, size, "%s", cursor + 2);
        return 'l';
    }
    return -1;
}

static void on_code_lookup(enum redis_status status, cJSON *replies, void *arg);

void
chance_codes(struct rpc_call *call, const cJSON *data, void *arg)
{
    static const char *const fields[] = {"category", "status", "user", "code",
                                         "cursor",   "limit",  NULL};
    struct query *q = query_new(arg, call);
    const char *status = NULL, *code = NULL, *cursor = NULL;
    char err[256], pos[48] = "0";
    int phase = 'f';
    if (json_check_fields(data, fields, err, sizeof(err)) ||
        page_limit(data, &q->limit, err, sizeof(err)) ||
        json_get_int(data, "category", false, 1, JSON_MAX_SAFE_INT, &q->category, err,
                     sizeof(err)) ||
        json_get_string(data, "status", false, 15, &status, err, sizeof(err)) ||
        json_get_string(data, "code", false, CODEGEN_MAX_CODE - 1, &code, err, sizeof(err)) ||
        json_get_string(data, "cursor", false, 60, &cursor, err, sizeof(err)) ||
        chance_id_field(data, "user", false, q->user, sizeof(q->user), err, sizeof(err))) {
        goto bad;
    }
    if (status && strcmp(status, "available") != 0 && strcmp(status, "assigned") != 0) {
        snprintf(err, sizeof(err), "field 'status' must be 'available' or 'assigned'");
        goto bad;
    }
    snprintf(q->status, sizeof(q->status), "%s", status ? status : "");
    if (code) {
        char norm[CODEGEN_MAX_CODE];
        if (codegen_normalise(code, norm, sizeof(norm)) != 0) {
            snprintf(err, sizeof(err), "field 'code' has characters no code contains");
            goto bad;
        }
        struct redis_batch *b = redis_batch_new(q->ch->redis);
        redis_batch_cmd(b, "HGET chance:codes %s", norm);
        q->ids = cJSON_CreateString(norm);
        redis_batch_send(b, on_code_lookup, q);
        return;
    }
    if (q->category == 0) {
        snprintf(err, sizeof(err), "give 'category' (or 'code')");
        goto bad;
    }
    if (q->user[0]) {
        char key[KEY_MAX];
        chance_key(key, q->category, "byuser");
        struct redis_batch *b = redis_batch_new(q->ch->redis);
        redis_batch_cmd(b, "HGET %s %s", key, q->user);
        q->cursor[63] = 'u';
        redis_batch_send(b, on_code_lookup, q);
        return;
    }
    if (status && strcmp(status, "assigned") == 0) {
        phase = 'l';
        snprintf(pos, sizeof(pos), "0-0");
    }
    if (cursor && (phase = parse_codes_cursor(q, cursor, pos, sizeof(pos))) < 0) {
        snprintf(err, sizeof(err), "field 'cursor' is not a cursor this service issued");
        goto bad;
    }
    if (phase == 'f' && status && strcmp(status, "assigned") == 0) {
        snprintf(err, sizeof(err), "field 'cursor' does not match the status filter");
        goto bad;
    }
    char key[KEY_MAX];
    struct redis_batch *b = redis_batch_new(q->ch->redis);
    if (phase == 'f') {
        chance_key(key, q->category, "free");
        redis_batch_cmd(b, "SSCAN %s %s COUNT %lld", key, pos, q->limit);
        q->ids = cJSON_CreateArray();
        cJSON_AddItemToArray(q->ids, cJSON_CreateString(pos));
    } else {
        chance_key(key, q->category, "log");
        redis_batch_cmd(b, "XRANGE %s (%s + COUNT %lld", key, pos, q->limit);
    }
    q->cursor[63] = (char)phase;
    redis_batch_send(b, on_code_page, q);
    return;
bad:
    rpc_reply_error(call, "bad_request", "%s", err);
    query_free(q);
}

static void
on_single_code(enum redis_status status, cJSON *replies, void *arg)
{
    struct query *q = arg;
    if (batch_failed(q, status, replies)) {
        return;
    }
    const cJSON *kv = cJSON_GetArrayItem(replies, 0);
    if (cJSON_GetArraySize(kv) == 0) {
        rpc_reply_error(q->call, "code_not_found", "no such code");
    } else {
        rpc_reply(q->call, code_json(kv));
    }
    cJSON_Delete(replies);
    query_free(q);
}

static void
on_code_lookup(enum redis_status status, cJSON *replies, void *arg)
{
    struct query *q = arg;
    if (batch_failed(q, status, replies)) {
        return;
    }
    const cJSON *r = cJSON_GetArrayItem(replies, 0);
    cJSON *codes = cJSON_CreateArray();
    if (q->cursor[63] == 'u') { /* byuser: "C1 C2 ..." */
        if (cJSON_IsString(r)) {
            char *list = xstrdup(r->valuestring), *save = NULL;
            for (char *t = strtok_r(list, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
                cJSON_AddItemToArray(codes, cJSON_CreateString(t));
            }
            free(list);
        }
    } else if (cJSON_IsString(r)) { /* code -> category */
        long long cat = atoll(r->valuestring);
        if (q->category && q->category != cat) {
            cat = -1;
        }
        if (cat > 0) {
            q->category = cat;
            cJSON_AddItemToArray(codes, cJSON_CreateString(q->ids->valuestring));
        }
    }
    q->cursor[0] = '\0';
    cJSON_Delete(replies);
    fetch_codes(q, codes);
    cJSON_Delete(codes);
}

static void
on_code_category(enum redis_status status, cJSON *replies, void *arg)
{
    struct query *q = arg;
    if (batch_failed(q, status, replies)) {
        return;
    }
    const cJSON *r = cJSON_GetArrayItem(replies, 0);
    if (!cJSON_IsString(r)) {
        cJSON_Delete(replies);
        rpc_reply_error(q->call, "code_not_found", "no such code");
        query_free(q);
        return;
    }
    char key[KEY_MAX];
    chance_key(key, atoll(r->valuestring), "code:");
    cJSON_Delete(replies);
    struct redis_batch *b = redis_batch_new(q->ch->redis);
    redis_batch_cmd(b, "HGETALL %s%s", key, q->ids->valuestring);
    redis_batch_send(b, on_single_code, q);
}

void
chance_code(struct rpc_call *call, const cJSON *data, void *arg)
{
    static const char *const fields[] = {"code", NULL};
    struct query *q = query_new(arg, call);
    const char *code = NULL;
    char err[256], norm[CODEGEN_MAX_CODE];
    if (json_check_fields(data, fields, err, sizeof(err)) ||
        json_get_string(data, "code", true, CODEGEN_MAX_CODE - 1, &code, err, sizeof(err))) {
        goto bad;
    }
    if (codegen_normalise(code, norm, sizeof(norm)) != 0) {
        snprintf(err, sizeof(err), "field 'code' has characters no code contains");
        goto bad;
    }
    q->ids = cJSON_CreateString(norm);
    struct redis_batch *b = redis_batch_new(q->ch->redis);
    redis_batch_cmd(b, "HGET chance:codes %s", norm);
    redis_batch_send(b, on_code_category, q);
    return;
bad:
    rpc_reply_error(call, "bad_request", "%s", err);
    query_free(q);
}

/* ---- chance.assignments ---- */

static void
on_assignments(enum redis_status status, cJSON *replies, void *arg)
{
    struct query *q = arg;
    if (batch_failed(q, status, replies)) {
        return;
    }
    cJSON *items = cJSON_CreateArray();
    const cJSON *e;
    const char *last = q->cursor[0] ? q->cursor : NULL;
    cJSON_ArrayForEach (e, cJSON_GetArrayItem(replies, 0)) {
        const cJSON *id = cJSON_GetArrayItem(e, 0), *kv = cJSON_GetArrayItem(e, 1);
        cJSON *it = cJSON_CreateObject();
        cJSON_AddStringToObject(it, "cursor", id->valuestring);
        cJSON_AddStringToObject(it, "type", kv_get(kv, "t") ? kv_get(kv, "t") : "");
        cJSON_AddStringToObject(it, "code", kv_get(kv, "code") ? kv_get(kv, "code") : "");
        cJSON_AddNumberToObject(it, "category", (double)q->category);
        cJSON_AddStringToObject(it, "claim_id", kv_get(kv, "claim") ? kv_get(kv, "claim") : "");
        cJSON_AddStringToObject(it, "user_id", kv_get(kv, "uid") ? kv_get(kv, "uid") : "");
        cJSON_AddStringToObject(it, "username", kv_get(kv, "uname") ? kv_get(kv, "uname") : "");
        cJSON_AddNumberToObject(it, "reward", (double)kv_int(kv, "reward"));
        cJSON_AddNumberToObject(it, "at", (double)kv_int(kv, "at"));
        cJSON_AddItemToArray(items, it);
        last = id->valuestring;
    }
    cJSON *resp = cJSON_CreateObject();
    cJSON_AddItemToObject(resp, "items", items);
    cJSON_AddItemToObject(resp, "next_cursor",
                          last ? cJSON_CreateString(last) : cJSON_CreateNull());
    rpc_reply(q->call, resp);
    cJSON_Delete(replies);
    query_free(q);
}

void
chance_assignments(struct rpc_call *call, const cJSON *data, void *arg)
{
    static const char *const fields[] = {"category", "after", "limit", NULL};
    struct query *q = query_new(arg, call);
    const char *after = NULL;
    char err[256];
    if (json_check_fields(data, fields, err, sizeof(err)) ||
        page_limit(data, &q->limit, err, sizeof(err)) ||
        json_get_int(data, "category", true, 1, JSON_MAX_SAFE_INT, &q->category, err,
                     sizeof(err)) ||
        json_get_string(data, "after", false, 47, &after, err, sizeof(err))) {
        goto bad;
    }
    if (after && !parse_stream_id(after)) {
        snprintf(err, sizeof(err), "field 'after' is not a cursor this service issued");
        goto bad;
    }
    snprintf(q->cursor, sizeof(q->cursor), "%s", after ? after : "");
    char key[KEY_MAX];
    chance_key(key, q->category, "log");
    struct redis_batch *b = redis_batch_new(q->ch->redis);
    redis_batch_cmd(b, "XRANGE %s (%s + COUNT %lld", key, after ? after : "0-0", q->limit);
    redis_batch_send(b, on_assignments, q);
    return;
bad:
    rpc_reply_error(call, "bad_request", "%s", err);
    query_free(q);
}

/* ---- chance.release ---- */

static void
on_released(enum redis_status status, cJSON *replies, void *arg)
{
    struct query *q = arg;
    if (batch_failed(q, status, replies)) {
        return;
    }
    const cJSON *r = cJSON_GetArrayItem(replies, 0);
    const cJSON *code = cJSON_GetArrayItem(r, 1);
    if (cJSON_GetArrayItem(r, 0)->valueint != 1) {
        rpc_reply_error(q->call, code->valuestring,
                        strcmp(code->valuestring, "not_owned") == 0
                            ? "the code is no longer assigned to that claim"
                            : "no such claim in that category");
    } else {
        cJSON *resp = cJSON_CreateObject();
        relay_touch(q->ch->relay, q->category); /* its claim.released event */
        cJSON_AddTrueToObject(resp, "released");
        cJSON_AddStringToObject(resp, "code", code->valuestring);
        rpc_reply(q->call, resp);
    }
    cJSON_Delete(replies);
    query_free(q);
}

void
chance_release(struct rpc_call *call, const cJSON *data, void *arg)
{
    static const char *const fields[] = {"claim_id", "category", "reason", NULL};
    struct query *q = query_new(arg, call);
    const char *claim = NULL, *reason = "released by the gateway";
    char err[256];
    if (json_check_fields(data, fields, err, sizeof(err)) ||
        json_get_string(data, "claim_id", true, 64, &claim, err, sizeof(err)) ||
        json_get_int(data, "category", true, 1, JSON_MAX_SAFE_INT, &q->category, err,
                     sizeof(err)) ||
        json_get_string(data, "reason", false, 200, &reason, err, sizeof(err))) {
        goto bad;
    }
    char keys[7][KEY_MAX], prefix[KEY_MAX], cat[24];
    static const char *const what[] = {"meta",   "free", "claims", "users",
                                       "events", "log",  "byuser"};
    const char *kp[7];
    for (int i = 0; i < 7; i++) {
        chance_key(keys[i], q->category, what[i]);
        kp[i] = keys[i];
    }
    chance_key(prefix, q->category, "code:");
    snprintf(cat, sizeof(cat), "%lld", q->category);
    const char *args[] = {claim, prefix, cat, reason};
    struct redis_batch *b = redis_batch_new(q->ch->redis);
    redis_batch_script(b, SCRIPT_RELEASE, 7, kp, 4, args, NULL);
    redis_batch_send(b, on_released, q);
    return;
bad:
    rpc_reply_error(call, "bad_request", "%s", err);
    query_free(q);
}
