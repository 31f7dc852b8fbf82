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
 * One statement, so one round trip and one commit. The NOT EXISTS guard makes a repeat a no-op
 * without an error; two racing first credits both pass it, and the ledger's unique constraints
 * make the second one fail as a whole (wallet update included).
 */
static const struct pg_stmt credit = {
    "claims_credit",
    "WITH c AS ("
    "  INSERT INTO claims (claim_id, user_id, category, status, code, reward)"
    "  SELECT $1::text, $2::bigint, $4::bigint, 'credited', $3::text, $5::bigint"
    "  WHERE NOT EXISTS (SELECT 1 FROM ledger WHERE claim_id = $1::text OR code = $3::text)"
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
    ") SELECT id, balance_after FROM l"};

static const struct pg_stmt existing = {
    "claims_existing", "SELECT claim_id, code, user_id, category, amount, balance_after FROM ledger"
                       " WHERE claim_id = $1 OR code = $2 ORDER BY (claim_id = $1) DESC LIMIT 1"};

static const struct pg_stmt pending = {
    "claims_pending",
    "INSERT INTO claims (claim_id, user_id, category, status) VALUES ($1, $2, $3, 'pending')"
    " ON CONFLICT (claim_id) DO NOTHING"};

static const struct pg_stmt failed = {
    "claims_failed",
    "INSERT INTO claims (claim_id, user_id, category, status, error)"
    " VALUES ($1, $2, $3, 'failed', $4)"
    " ON CONFLICT (claim_id) DO UPDATE SET status = 'failed', error = EXCLUDED.error,"
    "   updated_at = now() WHERE claims.status = 'pending'"};

static const struct pg_stmt lookup = {
    "claims_lookup",
    "SELECT c.category, c.status, l.code, l.user_id, l.category, l.amount, l.balance_after"
    " FROM claims c LEFT JOIN ledger l ON l.claim_id = c.claim_id WHERE c.claim_id = $1"};

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
static int
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
    snprintf(row->claim_id, sizeof(row->claim_id), "%s", pg_text(res, 0, 0));
    snprintf(row->code, sizeof(row->code), "%s", pg_text(res, 0, 1));
    row->user_id = pg_int(res, 0, 2);
    row->category = pg_int(res, 0, 3);
    row->reward = pg_int(res, 0, 4);
    row->balance = pg_int(res, 0, 5);
    pg_result_free(res);
    if (strcmp(row->claim_id, in->claim_id) != 0 || strcmp(row->code, in->code) != 0 ||
        row->user_id != in->user_id || row->reward != in->reward) {
        /* chance answered differently for the same claim or code: never pay twice, say so. */
        log_error("credit_mismatch",
                  "claim=%.12s code_category=%" PRId64 " ledger_claim=%.12s ledger_user=%" PRId64,
                  in->claim_id, in->category, row->claim_id, row->user_id);
        return CREDIT_MISMATCH;
    }
    return CREDIT_EXISTING;
}

int
claims_credit(struct gw *gw, struct pg_conn *c, const struct credit *in, struct credit_row *row,
              struct pg_error *err)
{
    char uid[24], cat[24], reward[24];
    snprintf(uid, sizeof(uid), "%" PRId64, in->user_id);
    snprintf(cat, sizeof(cat), "%" PRId64, in->category);
    snprintf(reward, sizeof(reward), "%" PRId64, in->reward);
    char *event = credited_event(in);
    const char *params[] = {in->claim_id, uid, in->code, cat, reward, in->source, event};
    struct pg_result *res = NULL;
    int rc = pg_exec(c, &credit, 7, params, &res, err);
    free(event);
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
    if (pg_rows(res) == 0) {
        pg_result_free(res);
        return lookup_existing(c, in, row, err);
    }
    snprintf(row->claim_id, sizeof(row->claim_id), "%s", in->claim_id);
    snprintf(row->code, sizeof(row->code), "%s", in->code);
    row->user_id = in->user_id;
    row->category = in->category;
    row->reward = in->reward;
    row->balance = pg_int(res, 0, 1);
    pg_result_free(res);
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

int
claims_mark_failed(struct gw *gw, struct pg_conn *c, const char *claim_id, int64_t user_id,
                   const char *username, int64_t category, const char *reason, struct pg_error *err)
{
    char uid[24], cat[24], msg[256];
    snprintf(uid, sizeof(uid), "%" PRId64, user_id);
    snprintf(cat, sizeof(cat), "%" PRId64, category);
    snprintf(msg, sizeof(msg), "%s could not claim a code of category %" PRId64 ": %s", username,
             category, reason);
    struct audit_actor actor = {uid, username, "user"};
    cJSON *subject = cJSON_CreateObject();
    cJSON_AddNumberToObject(subject, "category", (double)category);
    cJSON_AddStringToObject(subject, "user_id", uid);
    cJSON_AddStringToObject(subject, "username", username);
    cJSON_AddStringToObject(subject, "claim_id", claim_id);
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "reason", reason);
    char *event = audit_event("claim.failed", &actor, subject, data, msg);
    const char *params[] = {claim_id, uid, cat, reason};
    int rc = -1;
    if (pg_exec_sql(c, "BEGIN", err) == 0 && pg_exec(c, &failed, 4, params, NULL, err) == 0 &&
        audit_insert(c, event, err) == 0 && pg_exec_sql(c, "COMMIT", err) == 0) {
        rc = 0;
        gw_outbox_kick(gw);
    } else {
        pg_rollback(c);
    }
    free(event);
    return rc;
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
        out->category = pg_int(res, 0, 0);
        snprintf(out->status, sizeof(out->status), "%s", pg_text(res, 0, 1));
        if (!pg_is_null(res, 0, 2)) {
            out->credited = true;
            snprintf(out->row.claim_id, sizeof(out->row.claim_id), "%s", claim_id);
            snprintf(out->row.code, sizeof(out->row.code), "%s", pg_text(res, 0, 2));
            out->row.user_id = pg_int(res, 0, 3);
            out->row.category = pg_int(res, 0, 4);
            out->row.reward = pg_int(res, 0, 5);
            out->row.balance = pg_int(res, 0, 6);
        }
    }
    pg_result_free(res);
    return 0;
}

void
claims_release(struct gw *gw, const char *claim_id, int64_t category, const char *reason)
{
    cJSON *data = cJSON_CreateObject(), *result = NULL;
    cJSON_AddStringToObject(data, "claim_id", claim_id);
    cJSON_AddNumberToObject(data, "category", (double)category);
    cJSON_AddStringToObject(data, "reason", reason);
    int st = rpc_client_call_sync(gw->chance, "chance.release", data, (int)gw->conf->rpc_timeout_ms,
                                  &result, NULL, NULL);
    if (st == RPC_OK) {
        log_warn("claim_released", "claim=%.12s category=%" PRId64 " reason=\"%s\"", claim_id,
                 category, reason);
    } else {
        log_error("claim_release_failed", "claim=%.12s category=%" PRId64 " status=%s code=%s",
                  claim_id, category, rpc_client_status_name(st), rpc_client_err_code(result));
    }
    cJSON_Delete(result);
}
