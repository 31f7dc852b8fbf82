/* Crediting an assignment, repairing Redis from the ledger when they disagree (settle.h). */
#include "settle.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "gw.h"
#include "gwmetrics.h"
#include "json.h"
#include "log.h"
#include "rpc_client.h"

/* Draws after a repair at most this often per call: each draw takes a code no claim owns in
 * the ledger, so more rounds mean Redis lost many writes; the reconciler carries on. */
#define SETTLE_MAX_DRAWS 8

static bool
code_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CLAIM_CODE_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-')) {
            return false;
        }
    }
    return true;
}

int
settle_parse(const cJSON *r, const char *claim_id, struct assignment *a)
{
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(r, "code");
    const cJSON *cat = cJSON_GetObjectItemCaseSensitive(r, "category");
    const cJSON *reward = cJSON_GetObjectItemCaseSensitive(r, "reward");
    const cJSON *cid = cJSON_GetObjectItemCaseSensitive(r, "claim_id");
    const cJSON *limit = cJSON_GetObjectItemCaseSensitive(r, "per_user_limit");
    if (!cJSON_IsString(code) || !code_ok(code->valuestring) || !json_is_int(cat) ||
        cat->valuedouble < 1 || !json_is_int(reward) || reward->valuedouble < 1 ||
        !cJSON_IsString(cid) || strcmp(cid->valuestring, claim_id) != 0 ||
        (limit && (!json_is_int(limit) || limit->valuedouble < 1))) {
        return -1;
    }
    snprintf(a->code, sizeof(a->code), "%s", code->valuestring);
    a->category = (int64_t)cat->valuedouble;
    a->reward = (int64_t)reward->valuedouble;
    a->per_user_limit = limit ? (int64_t)limit->valuedouble : 1;
    a->replay = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "replay"));
    return 0;
}

int
settle_repair(struct gw *gw, const struct credit_row *row)
{
    cJSON *data = cJSON_CreateObject(), *result = NULL;
    cJSON_AddNumberToObject(data, "category", (double)row->category);
    cJSON_AddStringToObject(data, "code", row->code);
    cJSON_AddStringToObject(data, "claim_id", row->claim_id);
    cJSON *u = cJSON_AddObjectToObject(data, "user");
    cJSON_AddNumberToObject(u, "id", (double)row->user_id);
    cJSON_AddStringToObject(u, "username", row->username);
    cJSON_AddNumberToObject(data, "reward", (double)row->reward);
    cJSON_AddNumberToObject(data, "assigned_at", (double)row->credited_at);
    int st = rpc_client_call_sync(gw->chance, "chance.reassign", data,
                                  (int)gw->conf->rpc_timeout_ms, &result, NULL, NULL);
    int rc = -1;
    if (st == RPC_OK) {
        const char *victim =
            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(result, "victim_claim_id"));
        log_warn("redis_repaired",
                 "category=%" PRId64 " owner_claim=%.12s victim=%.12s reason=\"the ledger owns "
                 "the code\"",
                 row->category, row->claim_id, victim && victim[0] ? victim : "-");
        gwmetrics_count(gw->metrics, M_REDIS_REPAIRED, 1);
        rc = 0;
    } else {
        log_error("redis_repair_failed", "category=%" PRId64 " claim=%.12s status=%s code=%s",
                  row->category, row->claim_id, rpc_client_status_name(st),
                  rpc_client_err_code(result));
    }
    cJSON_Delete(result);
    return rc;
}

/*
 * Draws again under the claim id after a repair took its code away. Returns SETTLE_CREDITED
 * as "go on with *a", SETTLE_REFUSED (out->reason) or SETTLE_UNKNOWN.
 */
static enum settle_result
draw(struct gw *gw, const struct claimant *who, struct assignment *a, struct settle_out *out)
{
    cJSON *data = cJSON_CreateObject(), *result = NULL;
    cJSON_AddStringToObject(data, "claim_id", who->claim_id);
    cJSON_AddNumberToObject(data, "category", (double)a->category);
    cJSON *u = cJSON_AddObjectToObject(data, "user");
    cJSON_AddNumberToObject(u, "id", (double)who->user_id);
    cJSON_AddStringToObject(u, "username", who->username);
    int st = rpc_client_call_sync(gw->chance, "chance.claim", data, (int)gw->conf->rpc_timeout_ms,
                                  &result, NULL, NULL);
    const char *code = rpc_client_err_code(result);
    enum settle_result rc = SETTLE_UNKNOWN;
    if (st == RPC_OK && settle_parse(result, who->claim_id, a) == 0) {
        rc = SETTLE_CREDITED;
    } else if (st == RPC_ERROR && code[0] && strcmp(code, "unavailable") != 0 &&
               strcmp(code, "timeout") != 0 && strcmp(code, "internal") != 0 &&
               strcmp(code, "bad_request") != 0) {
        snprintf(out->reason, sizeof(out->reason), "%s", code);
        rc = SETTLE_REFUSED;
    } else {
        snprintf(out->err.message, sizeof(out->err.message), "drawing again: %s %s",
                 rpc_client_status_name(st), code);
    }
    cJSON_Delete(result);
    return rc;
}

/* Records the refusal (best effort: the claim has no code either way) and says so. */
static enum settle_result
refuse(struct gw *gw, struct pg_conn *c, const struct claimant *who, int64_t category,
       struct settle_out *out)
{
    struct pg_error err;
    if (claims_mark_failed(gw, c, who->claim_id, who->user_id, who->username, category, out->reason,
                           &err) != 0) {
        log_warn("claim_refusal_unrecorded", "claim=%.12s reason=\"%s\"", who->claim_id,
                 err.message);
    }
    return SETTLE_REFUSED;
}

/* A claim the reconciler finds in the log after the claim failed must not come back to life. */
static bool
claim_failed(struct pg_conn *c, const char *claim_id)
{
    struct claim_record rec;
    struct pg_error err;
    return claims_lookup(c, claim_id, &rec, &err) == 0 && rec.found &&
           strcmp(rec.status, "failed") == 0;
}

/* The user is at the limit in the ledger: the code goes back and the claim fails. */
static enum settle_result
over_limit(struct gw *gw, struct pg_conn *c, const struct claimant *who, const struct assignment *a,
           int64_t held, struct settle_out *out)
{
    log_warn("claim_over_limit",
             "claim=%.12s user=%" PRId64 " category=%" PRId64 " held=%" PRId64 " limit=%" PRId64,
             who->claim_id, who->user_id, a->category, held, a->per_user_limit);
    if (claims_release(gw, who->claim_id, a->code, a->category, held,
                       "the user already holds the limit (ledger)") != 0) {
        snprintf(out->err.message, sizeof(out->err.message),
                 "giving back a code over the limit failed");
        return SETTLE_UNKNOWN; /* the code stays assigned: settle again later */
    }
    gwmetrics_count(gw->metrics, M_OVER_LIMIT, 1);
    snprintf(out->reason, sizeof(out->reason), "user_limit_reached");
    return refuse(gw, c, who, a->category, out);
}

/*
 * The ledger holds this claim or this code otherwise than chance said (out->row). Returns the
 * outcome, or SETTLE_CREDITED meaning "drawn again: settle *a".
 */
static enum settle_result
mismatch(struct gw *gw, struct pg_conn *c, const struct claimant *who, struct assignment *a,
         int draws, struct settle_out *out)
{
    struct credit_row *row = &out->row;
    if (strcmp(row->claim_id, who->claim_id) == 0) {
        /* This claim id is in the ledger with another code. */
        if (row->category != a->category) {
            (void)claims_release(gw, who->claim_id, a->code, a->category, -1,
                                 "idempotency key reused");
            return SETTLE_KEY_REUSED;
        }
        /* Redis forgot the claim's code and drew another: the ledger's stands, the new one goes
         * back (chance.reassign frees it). */
        if (strcmp(row->code, a->code) != 0 && settle_repair(gw, row) != 0) {
            snprintf(out->err.message, sizeof(out->err.message), "repairing Redis failed");
            return SETTLE_UNKNOWN;
        }
        return SETTLE_REPLAYED;
    }
    /* The code is another claim's in the ledger: give it back to that claim, draw again. */
    if (draws == SETTLE_MAX_DRAWS || settle_repair(gw, row) != 0) {
        snprintf(out->err.message, sizeof(out->err.message),
                 draws == SETTLE_MAX_DRAWS ? "too many repairs in a row" : "repairing failed");
        return SETTLE_UNKNOWN;
    }
    if (strcmp(who->source, "reconciler") == 0 && claim_failed(c, who->claim_id)) {
        snprintf(out->reason, sizeof(out->reason), "already_failed");
        return SETTLE_REFUSED; /* its client was told it failed: it stays failed */
    }
    enum settle_result d = draw(gw, who, a, out);
    return d == SETTLE_REFUSED ? refuse(gw, c, who, a->category, out) : d;
}

enum settle_result
settle_assignment(struct gw *gw, struct pg_conn *c, const struct claimant *who,
                  struct assignment *a, struct settle_out *out)
{
    memset(out, 0, sizeof(*out));
    for (int draws = 0;; draws++) {
        struct credit in = {who->claim_id, who->user_id, who->username,     a->code,
                            a->category,   a->reward,    a->per_user_limit, who->source};
        int64_t held = 0;
        enum credit_result rc = claims_credit(gw, c, &in, &out->row, &held, &out->err);
        if (rc == CREDIT_FAILED && out->err.cls == PG_ERR_RETRY) {
            rc = claims_credit(gw, c, &in, &out->row, &held, &out->err); /* a lost race */
        }
        switch (rc) {
        case CREDIT_NEW: return SETTLE_CREDITED;
        case CREDIT_EXISTING: return SETTLE_REPLAYED;
        case CREDIT_ORPHAN: return SETTLE_ORPHAN;
        case CREDIT_FAILED: return SETTLE_UNKNOWN;
        case CREDIT_OVER_LIMIT: return over_limit(gw, c, who, a, held, out);
        case CREDIT_KEY_REUSED:
            /* The key's claim is in another category (pending or failed there): this code
             * goes back, that claim stays as it is. */
            (void)claims_release(gw, who->claim_id, a->code, a->category, -1,
                                 "idempotency key reused");
            return SETTLE_KEY_REUSED;
        case CREDIT_MISMATCH: break;
        }
        enum settle_result m = mismatch(gw, c, who, a, draws, out);
        if (m != SETTLE_CREDITED) {
            return m;
        }
    }
}
