/* The credit transaction and the claim records around it. */
#include "claims.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "gw.h"
#include "log.h"
#include "pg.h"
#include "rpc_client.h"

/*
 * One statement, so one round trip and one commit. g: is this claim and code new to the ledger
 * (a repeat is a no-op without an error), and is the claim id free of a record in another
 * category (a reused Idempotency-Key: the request path does not look the key up before asking
 * chance, so this is where the reuse is caught)? n: the user's count in the category, raised only
 * below the limit (ON CONFLICT re-reads the latest row, so two racing claims cannot both pass);
 * then the claim row, the wallet, the ledger row and the audit event, each only if the step
 * before produced a row. Two racing first credits of one claim or code both pass g, and the
 * ledger's unique constraints make the second fail as a whole.
 */
static const struct pg_stmt credit = {
    "claims_credit",
    "WITH g AS ("
    "  SELECT NOT EXISTS (SELECT 1 FROM ledger WHERE claim_id = $1::text OR code = $3::text)"
    "    AS fresh,"
    "  EXISTS (SELECT 1 FROM claims WHERE claim_id = $1::text AND category <> $4::bigint)"
    "    AS reused"
    "), n AS ("
    "  INSERT INTO claim_counts (user_id, category, n) SELECT $2::bigint, $4::bigint, 1 FROM g"
    "  WHERE g.fresh AND NOT g.reused"
    "  ON CONFLICT (user_id, category) DO UPDATE SET n = claim_counts.n + 1"
    "    WHERE claim_counts.n < $8::int"
    "  RETURNING n"
    "), c AS ("
    "  INSERT INTO claims (claim_id, user_id, category, status, code, reward)"
    "  SELECT $1::text, $2::bigint, $4::bigint, 'credited', $3::text, $5::bigint FROM n"
    "  ON CONFLICT (claim_id) DO UPDATE SET status = 'credited', code = EXCLUDED.code,"
    "    reward = EXCLUDED.reward, category = EXCLUDED.category, error = NULL, updated_at = now()"
    "  RETURNING 1"
    "), w AS ("
    "  INSERT INTO wallets (user_id, balance) SELECT $2::bigint, $5::bigint FROM c"
    "  ON CONFLICT (user_id) DO UPDATE SET balance = wallets.balance + EXCLUDED.balance,"
    "    updated_at = now()"
    "  RETURNING balance"
    "), l AS ("
    "  INSERT INTO ledger (user_id, claim_id, code, category, amount, balance_after, source)"
    "  SELECT $2::bigint, $1::text, $3::text, $4::bigint, $5::bigint, balance, $6::text FROM w"
    "  RETURNING id, balance_after"
    "), o AS ("
    "  INSERT INTO outbox (event) SELECT $7::text FROM l"
    ") SELECT (SELECT balance_after FROM l), (SELECT fresh FROM g),"
    "  (SELECT cc.n FROM claim_counts cc WHERE cc.user_id = $2::bigint AND cc.category = "
    "$4::bigint), (SELECT reused FROM g)"};
enum { CREDIT_COL_BALANCE, CREDIT_COL_FRESH, CREDIT_COL_HELD, CREDIT_COL_REUSED };

static const struct pg_stmt existing = {
    "claims_existing",
    "SELECT l.claim_id, l.code, l.user_id, l.category, l.amount, l.balance_after, u.username,"
    " (extract(epoch FROM l.created_at) * 1000)::bigint"
    " FROM ledger l JOIN users u ON u.id = l.user_id"
    " WHERE l.claim_id = $1 OR l.code = $2 ORDER BY (l.claim_id = $1) DESC LIMIT 1"};
enum {
    EXISTING_COL_CLAIM,
    EXISTING_COL_CODE,
    EXISTING_COL_USER,
    EXISTING_COL_CATEGORY,
    EXISTING_COL_AMOUNT,
    EXISTING_COL_BALANCE,
    EXISTING_COL_USERNAME,
    EXISTING_COL_AT,
};

static const struct pg_stmt pending = {
    "claims_pending",
    "INSERT INTO claims (claim_id, user_id, category, status) VALUES ($1, $2, $3, 'pending')"
    " ON CONFLICT (claim_id) DO NOTHING"};

/* Returns a row only if it inserted or changed one: the event is written only then. A pending
 * claim of another category (the key reused) is not this refusal's to fail. */
static const struct pg_stmt failed = {
    "claims_failed",
    "INSERT INTO claims (claim_id, user_id, category, status, error)"
    " VALUES ($1, $2, $3, 'failed', $4)"
    " ON CONFLICT (claim_id) DO UPDATE SET status = 'failed', error = EXCLUDED.error,"
    "   updated_at = now() WHERE claims.status = 'pending' AND claims.category = EXCLUDED.category"
    " RETURNING 1"};

static const struct pg_stmt lookup = {
    "claims_lookup",
    "SELECT c.category, c.status, l.code, l.user_id, l.category, l.amount, l.balance_after"
    " FROM claims c LEFT JOIN ledger l ON l.claim_id = c.claim_id WHERE c.claim_id = $1"};
enum {
    LOOKUP_COL_CATEGORY,
    LOOKUP_COL_STATUS,
    LOOKUP_COL_CODE,
    LOOKUP_COL_USER,
    LOOKUP_COL_LEDGER_CATEGORY,
    LOOKUP_COL_AMOUNT,
    LOOKUP_COL_BALANCE,
};

static char *
credited_event(const struct credit *in)
{
    char uid[24], money[32], msg[256];
    snprintf(uid, sizeof(uid), "%" PRId64, in->user_id);
    audit_money(in->reward, money, sizeof(money));
    snprintf(msg, sizeof(msg), "%s was credited %s Toman for a code of category %" PRId64 "%s",
             in->username, money, in->category,
             strcmp(in->source, "reconciler") == 0 ? " (by the reconciler)" : "");
    struct audit_actor actor = {uid, in->username, "user"};
    cJSON *subject = cJSON_CreateObject();
    cJSON_AddNumberToObject(subject, "category", (double)in->category);
    cJSON_AddStringToObject(subject, "code", in->code);
    cJSON_AddStringToObject(subject, "user_id", uid);
    cJSON_AddStringToObject(subject, "username", in->username);
    cJSON_AddStringToObject(subject, "claim_id", in->claim_id);
    cJSON *data = cJSON_CreateObject();
    cJSON_AddNumberToObject(data, "reward", (double)in->reward);
    cJSON_AddStringToObject(data, "source", in->source);
    return audit_event("claim.credited", &actor, subject, data, msg);
}

/* Finds the ledger row of this claim or code and compares it with what we tried to credit. */
static enum credit_result
lookup_existing(struct pg_conn *c, const struct credit *in, struct credit_row *row,
                struct pg_error *err)
{
    struct pg_result *res = NULL;
    const char *params[] = {in->claim_id, in->code};
    if (pg_exec(c, &existing, 2, params, &res, err) != 0) {
        return CREDIT_FAILED;
    }
    if (pg_rows(res) == 0) {
        /* Neither guard row exists: the statement lost a race that then rolled back. */
        pg_result_free(res);
        snprintf(err->message, sizeof(err->message), "credit raced with a rolled-back credit");
        err->cls = PG_ERR_RETRY;
        return CREDIT_FAILED;
    }
    snprintf(row->claim_id, sizeof(row->claim_id), "%s", pg_text(res, 0, EXISTING_COL_CLAIM));
    snprintf(row->code, sizeof(row->code), "%s", pg_text(res, 0, EXISTING_COL_CODE));
    snprintf(row->username, sizeof(row->username), "%s", pg_text(res, 0, EXISTING_COL_USERNAME));
    row->user_id = pg_int(res, 0, EXISTING_COL_USER);
    row->category = pg_int(res, 0, EXISTING_COL_CATEGORY);
    row->reward = pg_int(res, 0, EXISTING_COL_AMOUNT);
    row->balance = pg_int(res, 0, EXISTING_COL_BALANCE);
    row->credited_at = pg_int(res, 0, EXISTING_COL_AT);
    pg_result_free(res);
    if (strcmp(row->claim_id, in->claim_id) != 0 || strcmp(row->code, in->code) != 0 ||
        row->user_id != in->user_id || row->reward != in->reward) {
        /* chance answered differently for the same claim or code: never pay twice, say so. */
        log_warn("credit_mismatch",
                 "claim=%.12s category=%" PRId64 " ledger_claim=%.12s ledger_user=%" PRId64,
                 in->claim_id, in->category, row->claim_id, row->user_id);
        return CREDIT_MISMATCH;
    }
    return CREDIT_EXISTING;
}

/*
 * The count refused a credit whose guard saw no ledger row: the user is at the limit, or a
 * racing credit of this same claim (the same key sent twice at once, or to two gateways) committed
 * after the guard looked and took the last slot. The ledger tells which: a credited claim is
 * never answered "over the limit", nor its code given back.
 */
static enum credit_result
over_limit_or_raced(struct pg_conn *c, const struct credit *in, struct credit_row *row,
                    struct pg_error *err)
{
    enum credit_result rc = lookup_existing(c, in, row, err);
    if (rc == CREDIT_FAILED && err->cls == PG_ERR_RETRY) { /* no ledger row: the limit */
        memset(err, 0, sizeof(*err));
        memset(row, 0, sizeof(*row));
        return CREDIT_OVER_LIMIT;
    }
    return rc;
}

enum credit_result
claims_credit(struct gw *gw, struct pg_conn *c, const struct credit *in, struct credit_row *row,
              int64_t *held, struct pg_error *err)
{
    char uid[24], cat[24], reward[24], limit[24];
    snprintf(uid, sizeof(uid), "%" PRId64, in->user_id);
    snprintf(cat, sizeof(cat), "%" PRId64, in->category);
    snprintf(reward, sizeof(reward), "%" PRId64, in->reward);
    snprintf(limit, sizeof(limit), "%" PRId64, in->per_user_limit > 0 ? in->per_user_limit : 1);
    char *event = credited_event(in);
    const char *params[] = {in->claim_id, uid, in->code, cat, reward, in->source, event, limit};
    struct pg_result *res = NULL;
    int rc = pg_exec(c, &credit, 8, params, &res, err);
    free(event);
    memset(row, 0, sizeof(*row));
    if (rc != 0) {
        gw_pg_status(gw, err->cls != PG_ERR_CONNECTION);
        if (err->cls == PG_ERR_UNIQUE) {
            return lookup_existing(c, in, row, err);
        }
        if (err->cls == PG_ERR_FOREIGN) {
            return CREDIT_ORPHAN;
        }
        return CREDIT_FAILED;
    }
    gw_pg_status(gw, true);
    bool credited = !pg_is_null(res, 0, CREDIT_COL_BALANCE);
    bool fresh = pg_bool(res, 0, CREDIT_COL_FRESH);
    bool reused = pg_bool(res, 0, CREDIT_COL_REUSED);
    int64_t balance = pg_int(res, 0, CREDIT_COL_BALANCE);
    *held = pg_int(res, 0, CREDIT_COL_HELD);
    pg_result_free(res);
    if (!credited) {
        /* Seen before (the ledger), the key of a claim in another category, or new but the
         * user is at the limit (the count). */
        if (!fresh) {
            return lookup_existing(c, in, row, err);
        }
        return reused ? CREDIT_KEY_REUSED : over_limit_or_raced(c, in, row, err);
    }
    snprintf(row->claim_id, sizeof(row->claim_id), "%s", in->claim_id);
    snprintf(row->code, sizeof(row->code), "%s", in->code);
    snprintf(row->username, sizeof(row->username), "%s", in->username);
    row->user_id = in->user_id;
    row->category = in->category;
    row->reward = in->reward;
    row->balance = balance;
    row->credited_at = time_wall_ms();
    gw_outbox_kick(gw);
    return CREDIT_NEW;
}

int
claims_mark_pending(struct pg_conn *c, const char *claim_id, int64_t user_id, int64_t category,
                    struct pg_error *err)
{
    char uid[24], cat[24];
    snprintf(uid, sizeof(uid), "%" PRId64, user_id);
    snprintf(cat, sizeof(cat), "%" PRId64, category);
    const char *params[] = {claim_id, uid, cat};
    return pg_exec(c, &pending, 3, params, NULL, err);
}

struct refusal {
    const char *claim_id, *username, *reason;
    int64_t user_id, category;
};

static int
apply_failed(struct pg_conn *c, void *arg, char **event, struct pg_error *err)
{
    const struct refusal *r = arg;
    char uid[24], cat[24], msg[256];
    snprintf(uid, sizeof(uid), "%" PRId64, r->user_id);
    snprintf(cat, sizeof(cat), "%" PRId64, r->category);
    const char *params[] = {r->claim_id, uid, cat, r->reason};
    struct pg_result *res = NULL;
    if (pg_exec(c, &failed, 4, params, &res, err) != 0) {
        return -1;
    }
    int changed = pg_rows(res);
    pg_result_free(res);
    if (changed == 0) {
        return 0; /* credited, or already failed by another settler: nothing to tell */
    }
    snprintf(msg, sizeof(msg), "%s could not claim a code of category %" PRId64 ": %s", r->username,
             r->category, r->reason);
    struct audit_actor actor = {uid, r->username, "user"};
    cJSON *subject = cJSON_CreateObject();
    cJSON_AddNumberToObject(subject, "category", (double)r->category);
    cJSON_AddStringToObject(subject, "user_id", uid);
    cJSON_AddStringToObject(subject, "username", r->username);
    cJSON_AddStringToObject(subject, "claim_id", r->claim_id);
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "reason", r->reason);
    *event = audit_event("claim.failed", &actor, subject, data, msg);
    return 1;
}

int
claims_mark_failed(struct gw *gw, struct pg_conn *c, const char *claim_id, int64_t user_id,
                   const char *username, int64_t category, const char *reason, struct pg_error *err)
{
    struct refusal r = {claim_id, username, reason, user_id, category};
    return audit_commit(c, gw->relay, apply_failed, &r, err) < 0 ? -1 : 0;
}

int
claims_lookup(struct pg_conn *c, const char *claim_id, struct claim_record *out,
              struct pg_error *err)
{
    struct pg_result *res = NULL;
    const char *params[] = {claim_id};
    memset(out, 0, sizeof(*out));
    if (pg_exec(c, &lookup, 1, params, &res, err) != 0) {
        return -1;
    }
    if (pg_rows(res) == 1) {
        out->found = true;
        out->category = pg_int(res, 0, LOOKUP_COL_CATEGORY);
        snprintf(out->status, sizeof(out->status), "%s", pg_text(res, 0, LOOKUP_COL_STATUS));
        if (!pg_is_null(res, 0, LOOKUP_COL_CODE)) {
            out->credited = true;
            snprintf(out->row.claim_id, sizeof(out->row.claim_id), "%s", claim_id);
            snprintf(out->row.code, sizeof(out->row.code), "%s", pg_text(res, 0, LOOKUP_COL_CODE));
            out->row.user_id = pg_int(res, 0, LOOKUP_COL_USER);
            out->row.category = pg_int(res, 0, LOOKUP_COL_LEDGER_CATEGORY);
            out->row.reward = pg_int(res, 0, LOOKUP_COL_AMOUNT);
            out->row.balance = pg_int(res, 0, LOOKUP_COL_BALANCE);
        }
    }
    pg_result_free(res);
    return 0;
}

int
claims_release(struct gw *gw, const char *claim_id, const char *code, int64_t category,
               int64_t user_count, const char *reason)
{
    cJSON *data = cJSON_CreateObject(), *result = NULL;
    cJSON_AddStringToObject(data, "claim_id", claim_id);
    cJSON_AddStringToObject(data, "code", code);
    cJSON_AddNumberToObject(data, "category", (double)category);
    cJSON_AddStringToObject(data, "reason", reason);
    if (user_count >= 0) {
        cJSON_AddNumberToObject(data, "user_count", (double)user_count);
    }
    int st = rpc_client_call_sync(gw->chance, "chance.release", data, (int)gw->conf->rpc_timeout_ms,
                                  &result, NULL, NULL);
    const char *err = rpc_client_err_code(result);
    int rc = 0;
    if (st == RPC_OK) {
        log_warn("claim_released", "claim=%.12s category=%" PRId64 " reason=\"%s\"", claim_id,
                 category, reason);
    } else if (st == RPC_ERROR &&
               (strcmp(err, "not_owned") == 0 || strcmp(err, "claim_not_found") == 0)) {
        log_info("claim_release_moot", "claim=%.12s category=%" PRId64 " code=%s", claim_id,
                 category, err);
    } else {
        log_error("claim_release_failed", "claim=%.12s category=%" PRId64 " status=%s code=%s",
                  claim_id, category, rpc_client_status_name(st), err);
        rc = -1;
    }
    cJSON_Delete(result);
    return rc;
}
