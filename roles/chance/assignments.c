/*
 * What the gateway's reconciler needs from chance: the assignment log of a category
 * (chance.assignments), giving a code back (chance.release), and repairing Redis from the
 * ledger (chance.reassign: PostgreSQL says which claim owns a code), and checking that Redis
 * still holds what the ledger credited (chance.verify).
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
#define CLAIM_ID_MAX 64

struct req {
    struct chance *ch;     /* borrowed */
    struct rpc_call *call; /* answered at the end */
    long long category;
    char after[48]; /* assignments: the last entry seen, or "" */
};

static bool
stream_id_ok(const char *s)
{
    size_t n = strlen(s), d = strspn(s, "0123456789");
    return n < 48 && d > 0 && s[d] == '-' && s[d + 1] &&
           strspn(s + d + 1, "0123456789") == n - d - 1;
}

/* ---- chance.assignments ---- */

static void
on_assignments(enum redis_status status, cJSON *replies, void *arg)
{
    struct req *q = arg;
    if (!chance_replies_failed(q->call, status, replies)) {
        cJSON *items = cJSON_CreateArray();
        const cJSON *e;
        const char *last = q->after[0] ? q->after : NULL;
        cJSON_ArrayForEach (e, cJSON_GetArrayItem(replies, 0)) {
            const char *id = cJSON_GetStringValue(cJSON_GetArrayItem(e, 0));
            const cJSON *kv = cJSON_GetArrayItem(e, 1);
            if (id == NULL) {
                continue;
            }
            static const char *const text[][2] = {{"t", "type"},
                                                  {"code", "code"},
                                                  {"claim", "claim_id"},
                                                  {"uid", "user_id"},
                                                  {"uname", "username"}};
            cJSON *it = cJSON_CreateObject();
            cJSON_AddStringToObject(it, "cursor", id);
            for (size_t i = 0; i < ARRAY_SIZE(text); i++) {
                const char *v = chance_kv_get(kv, text[i][0]);
                cJSON_AddStringToObject(it, text[i][1], v ? v : "");
            }
            cJSON_AddNumberToObject(it, "category", (double)q->category);
            cJSON_AddNumberToObject(it, "reward", (double)chance_kv_int(kv, "reward"));
            cJSON_AddNumberToObject(it, "at", (double)chance_kv_int(kv, "at"));
            cJSON_AddItemToArray(items, it);
            last = id;
        }
        cJSON *resp = cJSON_CreateObject();
        cJSON_AddItemToObject(resp, "items", items);
        cJSON_AddItemToObject(resp, "next_cursor",
                              last ? cJSON_CreateString(last) : cJSON_CreateNull());
        rpc_reply(q->call, resp);
    }
    cJSON_Delete(replies);
    free(q);
}

void
chance_assignments(struct rpc_call *call, const cJSON *data, void *arg)
{
    static const char *const fields[] = {"category", "after", "limit", NULL};
    struct req *q = xcalloc(1, sizeof(*q));
    const char *after = NULL;
    long long limit = PAGE_DEFAULT;
    char err[256];
    q->ch = arg;
    q->call = call;
    if (json_check_fields(data, fields, err, sizeof(err)) ||
        json_get_int(data, "limit", false, 1, PAGE_MAX, &limit, err, sizeof(err)) ||
        json_get_int(data, "category", true, 1, JSON_MAX_SAFE_INT, &q->category, err,
                     sizeof(err)) ||
        json_get_string(data, "after", false, 47, &after, err, sizeof(err))) {
        goto bad;
    }
    if (after && !stream_id_ok(after)) {
        snprintf(err, sizeof(err), "field 'after' is not a cursor this service issued");
        goto bad;
    }
    snprintf(q->after, sizeof(q->after), "%s", after ? after : "");
    char key[KEY_MAX];
    chance_key(key, q->category, "log");
    struct redis_batch *b = redis_batch_new(q->ch->redis);
    redis_batch_cmd(b, "XRANGE %s (%s + COUNT %lld", key, after ? after : "0-0", limit);
    redis_batch_send(b, on_assignments, q);
    return;
bad:
    rpc_reply_error(call, "bad_request", "%s", err);
    free(q);
}

/* ---- chance.release ---- */

static void
on_released(enum redis_status status, cJSON *replies, void *arg)
{
    struct req *q = arg;
    if (!chance_replies_failed(q->call, status, replies)) {
        const cJSON *r = cJSON_GetArrayItem(replies, 0);
        const cJSON *ok = cJSON_GetArrayItem(r, 0);
        const char *code = cJSON_GetStringValue(cJSON_GetArrayItem(r, 1));
        if (!json_is_int(ok) || code == NULL) {
            rpc_reply_error(q->call, "internal", "unexpected reply of the release script");
        } else if (ok->valuedouble != 1) {
            bool owned = strcmp(code, "not_owned") == 0;
            rpc_reply_error(q->call, owned ? "not_owned" : "claim_not_found", "%s",
                            owned ? "the code is no longer assigned to that claim"
                                  : "no such claim in that category");
        } else {
            relay_touch(q->ch->relay, q->category); /* its claim.released event */
            cJSON *resp = cJSON_CreateObject();
            cJSON_AddTrueToObject(resp, "released");
            cJSON_AddStringToObject(resp, "code", code);
            rpc_reply(q->call, resp);
        }
    }
    cJSON_Delete(replies);
    free(q);
}

static void
send_category_script(struct req *q, int script, const char **args, int nargs, redis_done_fn fn)
{
    char keys[8][KEY_MAX];
    chance_claim_keys(keys, q->category);
    const char *kp[8];
    for (int i = 0; i < 8; i++) {
        kp[i] = keys[i];
    }
    struct redis_batch *b = redis_batch_new(q->ch->redis);
    redis_batch_script(b, script, 8, kp, nargs, args, NULL);
    redis_batch_send(b, fn, q);
}

void
chance_release(struct rpc_call *call, const cJSON *data, void *arg)
{
    static const char *const fields[] = {"claim_id",   "category", "reason",
                                         "user_count", "code",     NULL};
    struct req *q = xcalloc(1, sizeof(*q));
    const char *claim = NULL, *reason = "released by the gateway", *code = NULL;
    char norm[CODEGEN_MAX_CODE] = "";
    long long floor = -1;
    char err[256];
    q->ch = arg;
    q->call = call;
    if (json_check_fields(data, fields, err, sizeof(err)) ||
        json_get_string(data, "claim_id", true, CLAIM_ID_MAX, &claim, err, sizeof(err)) ||
        json_get_int(data, "category", true, 1, JSON_MAX_SAFE_INT, &q->category, err,
                     sizeof(err)) ||
        json_get_string(data, "reason", false, 200, &reason, err, sizeof(err)) ||
        json_get_int(data, "user_count", false, 0, 1000000, &floor, err, sizeof(err)) ||
        json_get_string(data, "code", false, CODEGEN_MAX_CODE - 1, &code, err, sizeof(err))) {
        goto bad;
    }
    if (!chance_token_ok(claim, CLAIM_ID_MAX) || !chance_printable(reason) ||
        (code && codegen_normalise(code, norm, sizeof(norm)) != 0)) {
        snprintf(err, sizeof(err), "field 'claim_id', 'code' or 'reason' is malformed");
        goto bad;
    }
    char cat[24], nonce[NONCE_HEX + 1], fl[24] = "";
    snprintf(cat, sizeof(cat), "%lld", q->category);
    if (floor >= 0) {
        snprintf(fl, sizeof(fl), "%lld", floor);
    }
    chance_nonce(q->ch, nonce);
    char minid[32];
    chance_log_minid(q->ch, minid, sizeof(minid));
    const char *args[] = {claim, cat, reason, nonce, fl, norm, minid};
    send_category_script(q, SCRIPT_RELEASE, args, 7, on_released);
    return;
bad:
    rpc_reply_error(call, "bad_request", "%s", err);
    free(q);
}

/* ---- chance.reassign ---- */

static void
on_reassigned(enum redis_status status, cJSON *replies, void *arg)
{
    struct req *q = arg;
    if (!chance_replies_failed(q->call, status, replies)) {
        const cJSON *r = cJSON_GetArrayItem(replies, 0);
        const char *victim = cJSON_GetStringValue(cJSON_GetArrayItem(r, 1));
        if (victim == NULL) {
            rpc_reply_error(q->call, "internal", "unexpected reply of the reassign script");
        } else {
            relay_touch(q->ch->relay, q->category); /* its code.repaired event */
            log_warn("code_repaired", "category=%lld victim=%.12s", q->category,
                     victim[0] ? victim : "-");
            cJSON *resp = cJSON_CreateObject();
            cJSON_AddTrueToObject(resp, "repaired");
            cJSON_AddStringToObject(resp, "victim_claim_id", victim);
            rpc_reply(q->call, resp);
        }
    }
    cJSON_Delete(replies);
    free(q);
}

void
chance_reassign(struct rpc_call *call, const cJSON *data, void *arg)
{
    static const char *const fields[] = {"category", "code",        "claim_id", "user",
                                         "reward",   "assigned_at", NULL};
    static const char *const user_fields[] = {"id", "username", NULL};
    struct req *q = xcalloc(1, sizeof(*q));
    const char *code = NULL, *claim = NULL, *uname = NULL;
    long long reward = 0, at = 0;
    char err[256], uid[65], norm[CODEGEN_MAX_CODE];
    const cJSON *user = cJSON_GetObjectItemCaseSensitive(data, "user");
    q->ch = arg;
    q->call = call;
    if (json_check_fields(data, fields, err, sizeof(err)) ||
        json_get_int(data, "category", true, 1, JSON_MAX_SAFE_INT, &q->category, err,
                     sizeof(err)) ||
        json_get_string(data, "code", true, CODEGEN_MAX_CODE - 1, &code, err, sizeof(err)) ||
        json_get_string(data, "claim_id", true, CLAIM_ID_MAX, &claim, err, sizeof(err)) ||
        json_get_int(data, "reward", true, 1, 1000000000000LL, &reward, err, sizeof(err)) ||
        json_get_int(data, "assigned_at", false, 0, JSON_MAX_SAFE_INT, &at, err, sizeof(err))) {
        goto bad;
    }
    if (user == NULL || json_check_fields(user, user_fields, err, sizeof(err)) ||
        chance_id_field(user, "id", true, uid, sizeof(uid), err, sizeof(err)) ||
        json_get_string(user, "username", true, 64, &uname, err, sizeof(err))) {
        if (user == NULL) {
            snprintf(err, sizeof(err), "field 'user' is required");
        }
        goto bad;
    }
    if (!chance_token_ok(claim, CLAIM_ID_MAX) || !chance_printable(uname) ||
        codegen_normalise(code, norm, sizeof(norm)) != 0) {
        snprintf(err, sizeof(err), "field 'claim_id', 'code' or 'user.username' is malformed");
        goto bad;
    }
    char cat[24], nonce[NONCE_HEX + 1], rw[24], ats[24];
    snprintf(cat, sizeof(cat), "%lld", q->category);
    snprintf(rw, sizeof(rw), "%lld", reward);
    snprintf(ats, sizeof(ats), "%lld", at);
    chance_nonce(q->ch, nonce);
    char minid[32];
    chance_log_minid(q->ch, minid, sizeof(minid));
    const char *args[] = {norm, claim, uid, uname, ats, rw, cat, nonce, minid};
    send_category_script(q, SCRIPT_REASSIGN, args, 9, on_reassigned);
    return;
bad:
    rpc_reply_error(call, "bad_request", "%s", err);
    free(q);
}

/* ---- chance.verify ---- */

#define VERIFY_MAX 1000

struct verify {
    struct rpc_call *call;
    long long category;
    int n;
    char **codes, **claims; /* n each, owned */
};

static void
verify_free(struct verify *v)
{
    for (int i = 0; i < v->n; i++) {
        free(v->codes[i]);
        free(v->claims[i]);
    }
    free(v->codes);
    free(v->claims);
    free(v);
}

/* What Redis says of one code, as the gateway's reconciler reads it. */
static const char *
code_state(const cJSON *record, const char *claim)
{
    const char *text = cJSON_GetStringValue(record);
    if (text == NULL) {
        return "missing";
    }
    cJSON *d = cJSON_Parse(text);
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(d, "s"));
    const char *c = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(d, "c"));
    const char *state = "damaged";
    if (s && strcmp(s, "available") == 0) {
        state = "available";
    } else if (s && strcmp(s, "assigned") == 0) {
        state = c && strcmp(c, claim) == 0 ? "ok" : "other";
    }
    cJSON_Delete(d);
    return state;
}

static void
on_verified(enum redis_status status, cJSON *replies, void *arg)
{
    struct verify *v = arg;
    if (!chance_replies_failed(v->call, status, replies)) {
        int nrec = 0, nmap = 0;
        const cJSON **records = json_items(cJSON_GetArrayItem(replies, 0), &nrec);
        const cJSON **mapped = json_items(cJSON_GetArrayItem(replies, 1), &nmap);
        cJSON *wrong = cJSON_CreateArray();
        for (int i = 0; i < v->n; i++) {
            const char *state = code_state(i < nrec ? records[i] : NULL, v->claims[i]);
            const char *m = cJSON_GetStringValue(i < nmap ? mapped[i] : NULL);
            if (strcmp(state, "ok") == 0 && m && strcmp(m, v->codes[i]) == 0) {
                continue;
            }
            cJSON *it = cJSON_CreateObject();
            cJSON_AddStringToObject(it, "code", v->codes[i]);
            cJSON_AddStringToObject(it, "claim_id", v->claims[i]);
            cJSON_AddStringToObject(it, "state", strcmp(state, "ok") == 0 ? "unmapped" : state);
            cJSON_AddItemToArray(wrong, it);
        }
        free(records);
        free(mapped);
        cJSON *resp = cJSON_CreateObject();
        cJSON_AddItemToObject(resp, "mismatches", wrong);
        rpc_reply(v->call, resp);
    }
    cJSON_Delete(replies);
    verify_free(v);
}

void
chance_verify(struct rpc_call *call, const cJSON *data, void *arg)
{
    static const char *const fields[] = {"category", "items", NULL};
    static const char *const item_fields[] = {"code", "claim_id", NULL};
    struct chance *ch = arg;
    struct verify *v = xcalloc(1, sizeof(*v));
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(data, "items");
    char err[256];
    v->call = call;
    if (json_check_fields(data, fields, err, sizeof(err)) ||
        json_get_int(data, "category", true, 1, JSON_MAX_SAFE_INT, &v->category, err,
                     sizeof(err))) {
        goto bad;
    }
    int n = cJSON_GetArraySize(items);
    if (!cJSON_IsArray(items) || n < 1 || n > VERIFY_MAX) {
        snprintf(err, sizeof(err), "field 'items' must be an array of 1 to %d items", VERIFY_MAX);
        goto bad;
    }
    v->codes = xcalloc((size_t)n, sizeof(char *));
    v->claims = xcalloc((size_t)n, sizeof(char *));
    const cJSON *it;
    cJSON_ArrayForEach (it, items) {
        const char *code = NULL, *claim = NULL;
        char norm[CODEGEN_MAX_CODE];
        if (json_check_fields(it, item_fields, err, sizeof(err)) ||
            json_get_string(it, "code", true, CODEGEN_MAX_CODE - 1, &code, err, sizeof(err)) ||
            json_get_string(it, "claim_id", true, CLAIM_ID_MAX, &claim, err, sizeof(err))) {
            goto bad;
        }
        if (!chance_token_ok(claim, CLAIM_ID_MAX) ||
            codegen_normalise(code, norm, sizeof(norm)) != 0) {
            snprintf(err, sizeof(err), "items[%d]: 'code' or 'claim_id' is malformed", v->n);
            goto bad;
        }
        v->codes[v->n] = xstrdup(norm);
        v->claims[v->n] = xstrdup(claim);
        v->n++;
    }
    /* Two reads of one category (one slot): the code records and the claim -> code map. */
    char codes_key[KEY_MAX], claims_key[KEY_MAX];
    chance_key(codes_key, v->category, "codes");
    chance_key(claims_key, v->category, "claims");
    const char **argv = xcalloc((size_t)v->n + 2, sizeof(char *));
    struct redis_batch *b = redis_batch_new(ch->redis);
    argv[0] = "HMGET";
    argv[1] = codes_key;
    for (int i = 0; i < v->n; i++) {
        argv[i + 2] = v->codes[i];
    }
    redis_batch_argv(b, v->n + 2, argv, NULL);
    argv[1] = claims_key;
    for (int i = 0; i < v->n; i++) {
        argv[i + 2] = v->claims[i];
    }
    redis_batch_argv(b, v->n + 2, argv, NULL);
    free(argv);
    redis_batch_send(b, on_verified, v);
    return;
bad:
    rpc_reply_error(call, "bad_request", "%s", err);
    verify_free(v);
}
