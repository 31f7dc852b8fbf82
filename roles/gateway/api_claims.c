/*
 * POST /api/v1/claims: the hot path. One chance.claim round trip, then one PostgreSQL statement
 * that credits (settle.c; docs/architecture.md#money-guarantees). Unknown outcomes answer 202
 * and are finished by the reconciler.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "claims.h"
#include "claimid.h"
#include "gw.h"
#include "json.h"
#include "log.h"
#include "gwmetrics.h"
#include "pg.h"
#include "ratelimit.h"
#include "rpc_client.h"
#include "settle.h"

#define IDEMPOTENCY_KEY_MAX 255

/* chance error codes and how they reach the client. */
static const char *const claim_errors[] = {
    "category_not_found",
    "404",
    "category_disabled",
    "409",
    "not_in_window",
    "409",
    "user_limit_reached",
    "409",
    "category_exhausted",
    "409",
    NULL,
};

static bool
key_ok(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > IDEMPOTENCY_KEY_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (k[i] < 0x21 || k[i] > 0x7e) {
            return false; /* visible ASCII only */
        }
    }
    return true;
}

static void
reply_credit(struct api_call *call, const struct credit_row *row, bool replayed)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "claim_id", row->claim_id);
    cJSON_AddStringToObject(b, "status", "credited");
    cJSON_AddStringToObject(b, "code", row->code);
    cJSON_AddNumberToObject(b, "category", (double)row->category);
    cJSON_AddNumberToObject(b, "reward", (double)row->reward);
    cJSON_AddNumberToObject(b, "balance", (double)row->balance);
    api_reply(call, 201, b, replayed ? "Idempotent-Replayed: true\r\n" : NULL);
}

static void
reply_pending(struct api_call *call, const char *claim_id, int64_t category)
{
    struct pg_error err;
    struct pg_conn *c = pg_acquire(call->gw->pg, (int)call->gw->conf->pg_acquire_timeout_ms, &err);
    /* Best effort: without the row the reconciler still finds the assignment, if there is one. */
    if (c == NULL || claims_mark_pending(c, claim_id, call->who.user_id, category, &err) != 0) {
        log_warn("claim_pending_unrecorded", "claim=%.12s reason=\"%s\"", claim_id, err.message);
    }
    pg_release(call->gw->pg, c);
    gwmetrics_count(call->gw->metrics, M_CLAIM_PENDING, 1);
    char loc[128];
    snprintf(loc, sizeof(loc), "Location: /api/v1/claims/%s\r\nRetry-After: 1\r\n", claim_id);
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "claim_id", claim_id);
    cJSON_AddStringToObject(b, "status", "pending");
    cJSON_AddNumberToObject(b, "category", (double)category);
    api_reply(call, 202, b, loc);
}

static void
record_refusal(struct api_call *call, const char *claim_id, int64_t category, const cJSON *err)
{
    struct pg_error perr;
    struct pg_conn *c = pg_acquire(call->gw->pg, (int)call->gw->conf->pg_acquire_timeout_ms, &perr);
    if (c == NULL ||
        claims_mark_failed(call->gw, c, claim_id, call->who.user_id, call->who.username, category,
                           rpc_client_err_code(err), &perr) != 0) {
        log_warn("claim_refusal_unrecorded", "claim=%.12s reason=\"%s\"", claim_id, perr.message);
    }
    pg_release(call->gw->pg, c);
}

/* The client's answer to a refusal that settling found (its reason is a chance error code). */
static void
reply_refused(struct api_call *call, const char *reason)
{
    int status = 409;
    for (size_t i = 0; claim_errors[i]; i += 2) {
        if (strcmp(claim_errors[i], reason) == 0) {
            status = atoi(claim_errors[i + 1]);
        }
    }
    gwmetrics_count(call->gw->metrics, M_CLAIM_REFUSED, 1);
    http_problem(call->req, status, reason[0] ? reason : "refused",
                 strcmp(reason, "user_limit_reached") == 0
                     ? "you already hold the most codes this category allows"
                     : "the claim could not be completed",
                 NULL);
}

static void
credit_and_reply(struct api_call *call, const char *claim_id, struct assignment *a)
{
    struct gw *gw = call->gw;
    struct claimant who = {claim_id, call->who.user_id, call->who.username, "request"};
    struct settle_out out;
    struct pg_error err = {0};
    struct pg_conn *c = pg_acquire(gw->pg, (int)gw->conf->pg_acquire_timeout_ms, &err);
    if (c == NULL) {
        /* The code is assigned and the credit is not written: the reconciler will write it. */
        log_warn("credit_deferred", "claim=%.12s reason=\"%s\"", claim_id, err.message);
        reply_pending(call, claim_id, a->category);
        return;
    }
    enum settle_result rc = settle_assignment(gw, c, &who, a, &out);
    pg_release(gw->pg, c);
    switch (rc) {
    case SETTLE_CREDITED:
        gwmetrics_count(gw->metrics, M_CLAIM_CREDITED, 1);
        reply_credit(call, &out.row, false);
        break;
    case SETTLE_REPLAYED:
        gwmetrics_count(gw->metrics, M_CLAIM_REPLAYED, 1);
        reply_credit(call, &out.row, true);
        break;
    case SETTLE_REFUSED: reply_refused(call, out.reason); break;
    case SETTLE_KEY_REUSED:
        http_problem(call->req, 422, "idempotency_key_reused",
                     "this Idempotency-Key was used with a different request", NULL);
        break;
    case SETTLE_ORPHAN:
        http_problem(call->req, 500, "internal", "the claim could not be credited", NULL);
        break;
    case SETTLE_UNKNOWN:
        log_warn("credit_deferred", "claim=%.12s reason=\"%s\"", claim_id, out.err.message);
        reply_pending(call, claim_id, a->category);
        break;
    }
}

/*
 * A key chance gave no code for this time: PostgreSQL may still know its claim (a retry of a
 * claim credited before, asked again while chance is down, or after the category closed or
 * ran out; or a key first used in another category). Returns true if the request was answered
 * here (a replay, a reused key, or a PostgreSQL failure), false to answer chance's refusal.
 */
static bool
answer_from_record(struct api_call *call, const char *claim_id, long long category)
{
    struct claim_record rec;
    struct pg_error err;
    struct pg_conn *c = api_pg(call);
    if (c == NULL) {
        return true;
    }
    int rc = claims_lookup(c, claim_id, &rec, &err);
    pg_release(call->gw->pg, c);
    if (rc != 0) {
        api_pg_problem(call, &err);
    } else if (rec.found && rec.category != category) {
        http_problem(call->req, 422, "idempotency_key_reused",
                     "this Idempotency-Key was used with a different request", NULL);
    } else if (rec.credited) {
        gwmetrics_count(call->gw->metrics, M_CLAIM_REPLAYED, 1);
        reply_credit(call, &rec.row, true);
    } else {
        return false;
    }
    return true;
}

/*
 * Maps chance's answer (or its absence) to the client's. A key is not looked up before chance
 * is asked: chance answers a retry with the claim's code (a replay) and the credit statement
 * finds it in the ledger, or finds the key's claim in another category (settle.c). Only when
 * chance refuses or cannot be reached is PostgreSQL asked what it knows of the key; an
 * unknown outcome is 202 either way (GET /api/v1/claims/{id} tells the rest).
 */
static void
answer_chance(struct api_call *call, const char *claim_id, bool keyed, long long category, int st,
              const cJSON *result)
{
    struct gw *gw = call->gw;
    const char *code = rpc_client_err_code(result);
    struct assignment a;
    bool assigned = st == RPC_OK && settle_parse(result, claim_id, &a) == 0;
    bool unknown = st == RPC_TIMEOUT || st == RPC_LOST ||
                   (st == RPC_ERROR && strcmp(code, "timeout") == 0) || (st == RPC_OK && !assigned);
    if (!assigned && !unknown && keyed && answer_from_record(call, claim_id, category)) {
        return;
    }
    if (assigned) {
        if (a.category != category) {
            /* The key was first used for another category: refuse rather than replay. */
            http_problem(call->req, 422, "idempotency_key_reused",
                         "this Idempotency-Key was used with a different request", NULL);
            return;
        }
        gw_failpoint(gw, "after_assign_before_credit");
        credit_and_reply(call, claim_id, &a);
    } else if (st == RPC_OK) {
        log_error("chance_bad_reply", "claim=%.12s", claim_id);
        reply_pending(call, claim_id, category); /* something was assigned, maybe */
    } else if (unknown) {
        reply_pending(call, claim_id, category); /* unknown outcome: never release, never retry */
    } else if (st == RPC_ERROR && strcmp(code, "unavailable") != 0 &&
               strcmp(code, "bad_request") != 0 && strcmp(code, "internal") != 0) {
        gwmetrics_count(gw->metrics, M_CLAIM_REFUSED, 1);
        record_refusal(call, claim_id, category, result);
        api_rpc_problem(call, "chance", st, result, claim_errors);
    } else {
        gwmetrics_count(gw->metrics, M_CLAIM_UNAVAILABLE, 1);
        api_rpc_problem(call, "chance", st, result, claim_errors);
    }
}

/* Reads {category}; -1 after answering. */
static int
read_category(struct api_call *call, long long *category)
{
    static const char *const fields[] = {"category", NULL};
    char err[160];
    cJSON *body = api_read_json(call, fields);
    if (body == NULL) {
        return -1;
    }
    int rc = json_get_int(body, "category", true, 1, JSON_MAX_SAFE_INT, category, err, sizeof(err));
    cJSON_Delete(body);
    if (rc != 0) {
        http_problem(call->req, 422, "validation_failed", err, NULL);
    }
    return rc;
}

void
api_claims_create(struct api_call *call)
{
    struct gw *gw = call->gw;
    long long category = 0;
    int wait = ratelimit_take(gw->rl_claim, call->who.id);
    if (wait > 0) {
        api_rate_limited(call, wait, "claims");
        return;
    }
    const char *key = http_header(call->req, "Idempotency-Key");
    if (key && !key_ok(key)) {
        http_problem(call->req, 400, "bad_idempotency_key",
                     "Idempotency-Key must be 1 to 255 visible ASCII characters", NULL);
        return;
    }
    if (read_category(call, &category) != 0) {
        return;
    }
    /* The claim id is a function of the user and the key, so a retry can never claim twice;
     * its tag lets the reconciler tell it from one made up by someone who reached chance. */
    char claim_id[CLAIMID_LEN + 1];
    claimid_make(gw->claim_secret, strlen(gw->claim_secret), call->who.user_id, key, claim_id);
    cJSON *data = cJSON_CreateObject(), *result = NULL;
    cJSON_AddStringToObject(data, "claim_id", claim_id);
    cJSON_AddNumberToObject(data, "category", (double)category);
    cJSON *user = cJSON_AddObjectToObject(data, "user");
    cJSON_AddNumberToObject(user, "id", (double)call->who.user_id);
    cJSON_AddStringToObject(user, "username", call->who.username);
    int st = rpc_client_call_sync(gw->chance, "chance.claim", data, (int)gw->conf->rpc_timeout_ms,
                                  &result, NULL, NULL);
    answer_chance(call, claim_id, key != NULL, category, st, result);
    cJSON_Delete(result);
}
