/*
 * chance.claim: one script assigns a random code of a category to a claim id, or answers with
 * the code that claim id already has. Replies from Redis are checked before use: whatever Redis
 * holds, a malformed answer is an error reply, never a crash.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chance.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "redis.h"
#include "relay.h"
#include "rpc_server.h"
#include "scripts.h"

#define CLAIM_ID_MAX 64
#define USER_FIELD_MAX 64

struct claim_req {
    struct chance *ch;     /* borrowed */
    struct rpc_call *call; /* finished in on_claim_reply */
    long long category;
    char claim_id[CLAIM_ID_MAX + 1];
};

static void
count(struct chance *ch, const char *outcome)
{
    char labels[96];
    snprintf(labels, sizeof(labels), "outcome=\"%.60s\"", outcome);
    metrics_add(ch->metrics, "chanced_claims_total", labels, 1);
}

/* {1, code, reward, assigned_at, replay, per_user_limit}, every item of the right kind. */
static bool
well_formed(const cJSON *r)
{
    const cJSON *code = cJSON_GetArrayItem(r, 1), *reward = cJSON_GetArrayItem(r, 2);
    const cJSON *at = cJSON_GetArrayItem(r, 3), *replay = cJSON_GetArrayItem(r, 4);
    const cJSON *limit = cJSON_GetArrayItem(r, 5);
    return cJSON_IsString(code) && code->valuestring[0] && json_is_int(reward) &&
           reward->valuedouble >= 1 && json_is_int(at) && json_is_int(replay) && json_is_int(limit);
}

static void
on_claim_reply(enum redis_status status, cJSON *replies, void *arg)
{
    struct claim_req *req = arg;
    struct rpc_call *call = req->call;
    const cJSON *r = cJSON_GetArrayItem(replies, 0);
    const cJSON *ok = cJSON_GetArrayItem(r, 0);
    if (status != REDIS_DONE) {
        chance_reply_redis_failure(call, status);
    } else if (redis_reply_is_error(r)) {
        log_error("claim_script_failed", "error=\"%.200s\"", redis_reply_error(r));
        rpc_reply_error(call, "internal", "the claim could not be processed");
    } else if (!cJSON_IsArray(r) || !json_is_int(ok)) {
        log_error("claim_reply_invalid", "category=%lld", req->category);
        rpc_reply_error(call, "internal", "the claim could not be processed");
    } else if (ok->valuedouble != 1) {
        const cJSON *code = cJSON_GetArrayItem(r, 1);
        const char *c = cJSON_IsString(code) && chance_token_ok(code->valuestring, 40)
                            ? code->valuestring
                            : "internal";
        count(req->ch, c);
        if (strcmp(c, "inconsistent") == 0) {
            /* The claim id maps to a code whose record is missing or names another claim:
             * damaged data (or a lost write). The gateway repairs it from the ledger. */
            log_error("claim_record_inconsistent", "category=%lld claim=%.12s", req->category,
                      req->claim_id);
            rpc_reply_error(call, c, "the claim's code record is inconsistent");
        } else {
            rpc_reply_error(call, c, "claim refused: %s", c);
        }
    } else if (!well_formed(r)) {
        log_error("claim_reply_invalid", "category=%lld", req->category);
        rpc_reply_error(call, "internal", "the claim could not be processed");
    } else {
        bool replay = cJSON_GetArrayItem(r, 4)->valuedouble == 1;
        count(req->ch, replay ? "replay" : "assigned");
        if (!replay) {
            relay_touch(req->ch->relay, req->category); /* its code.assigned event is waiting */
        }
        cJSON *resp = cJSON_CreateObject();
        cJSON_AddItemToObject(resp, "code", cJSON_Duplicate(cJSON_GetArrayItem(r, 1), 1));
        cJSON_AddNumberToObject(resp, "category", (double)req->category);
        cJSON_AddItemToObject(resp, "reward", cJSON_Duplicate(cJSON_GetArrayItem(r, 2), 1));
        cJSON_AddItemToObject(resp, "assigned_at", cJSON_Duplicate(cJSON_GetArrayItem(r, 3), 1));
        cJSON_AddStringToObject(resp, "claim_id", req->claim_id);
        cJSON_AddBoolToObject(resp, "replay", replay);
        cJSON_AddItemToObject(resp, "per_user_limit", cJSON_Duplicate(cJSON_GetArrayItem(r, 5), 1));
        rpc_reply(call, resp);
    }
    cJSON_Delete(replies);
    free(req);
}

void
chance_claim(struct rpc_call *call, const cJSON *data, void *arg)
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
    if (!chance_token_ok(claim_id, CLAIM_ID_MAX)) {
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
    if (!chance_printable(username)) {
        snprintf(err, sizeof(err), "field 'user.username' has control characters");
        goto bad;
    }

    chance_claims_busy_tell(ch);
    struct claim_req *req = xcalloc(1, sizeof(*req));
    req->ch = ch;
    req->call = call;
    req->category = category;
    snprintf(req->claim_id, sizeof(req->claim_id), "%s", claim_id);
    char keys[8][KEY_MAX], cat[24];
    chance_claim_keys(keys, category);
    const char *kp[8];
    for (int i = 0; i < 8; i++) {
        kp[i] = keys[i];
    }
    snprintf(cat, sizeof(cat), "%lld", category);
    char minid[32];
    chance_log_minid(ch, minid, sizeof(minid));
    const char *args[] = {claim_id, uid, username, cat, minid};
    struct redis_batch *b = redis_batch_new(ch->redis);
    redis_batch_script(b, SCRIPT_CLAIM, 8, kp, 5, args, NULL);
    redis_batch_send(b, on_claim_reply, req);
    return;

bad:
    rpc_reply_error(call, "bad_request", "%s", err);
}
