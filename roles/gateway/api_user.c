/* A user's own views: claimable categories, claims, one claim, wallet. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "gw.h"
#include "json.h"
#include "pg.h"
#include "rpc_client.h"

#define PAGE_DEFAULT 50
#define PAGE_MAX 1000
#define CURSOR_MAX 9007199254740991LL /* ids stay below 2^53 */

static const struct pg_stmt claims_page = {
    "user_claims_page", "SELECT seq AS _cursor, claim_id, category, status, code, reward, error,"
                        " (extract(epoch FROM created_at) * 1000)::bigint AS created_at,"
                        " (extract(epoch FROM updated_at) * 1000)::bigint AS updated_at"
                        " FROM claims WHERE user_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"};
static const struct pg_stmt claim_one = {
    "user_claim_one", "SELECT claim_id, category, status, code, reward, error,"
                      " (extract(epoch FROM created_at) * 1000)::bigint AS created_at,"
                      " (extract(epoch FROM updated_at) * 1000)::bigint AS updated_at"
                      " FROM claims WHERE claim_id = $1 AND user_id = $2"};
static const struct pg_stmt wallet_balance = {"user_wallet_balance",
                                              "SELECT balance FROM wallets WHERE user_id = $1"};
static const struct pg_stmt ledger_page = {
    "user_ledger_page",
    "SELECT id AS _cursor, id, claim_id, code, category, amount, balance_after, source,"
    " (extract(epoch FROM created_at) * 1000)::bigint AS created_at"
    " FROM ledger WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"};

/* Reads ?cursor&limit; -1 after answering. cursor defaults to "past the newest". */
static int
page_params(struct api_call *call, struct urlquery *q, long long *cursor, long long *limit)
{
    if (api_query(call, q) != 0) {
        return -1;
    }
    if (api_query_int(call, q, "cursor", 1, CURSOR_MAX, CURSOR_MAX, cursor) != 0 ||
        api_query_int(call, q, "limit", 1, PAGE_MAX, PAGE_DEFAULT, limit) != 0) {
        urlquery_cleanup(q);
        return -1;
    }
    return 0;
}

void
api_user_claims(struct api_call *call)
{
    struct urlquery q;
    long long cursor, limit;
    if (page_params(call, &q, &cursor, &limit) != 0) {
        return;
    }
    urlquery_cleanup(&q);
    struct pg_error err;
    struct pg_result *res = NULL;
    struct pg_conn *c = api_pg(call);
    if (c == NULL) {
        return;
    }
    char cur[24], lim[24];
    snprintf(cur, sizeof(cur), "%lld", cursor);
    snprintf(lim, sizeof(lim), "%lld", limit);
    const char *params[] = {call->who.id, cur, lim};
    if (pg_exec(c, &claims_page, 3, params, &res, &err) != 0) {
        api_pg_problem(call, &err);
    } else {
        api_reply(call, 200, api_rows_page(res, limit), NULL);
    }
    pg_result_free(res);
    pg_release(call->gw->pg, c);
}

void
api_user_claim(struct api_call *call)
{
    struct pg_error err;
    struct pg_result *res = NULL;
    if (strlen(call->param) > 64) {
        http_problem(call->req, 404, "not_found", "no such claim", NULL);
        return;
    }
    struct pg_conn *c = api_pg(call);
    if (c == NULL) {
        return;
    }
    const char *params[] = {call->param, call->who.id};
    if (pg_exec(c, &claim_one, 2, params, &res, &err) != 0) {
        api_pg_problem(call, &err);
    } else if (pg_rows(res) != 1) {
        /* Someone else's claim and no claim at all look the same. */
        http_problem(call->req, 404, "not_found", "no such claim", NULL);
    } else {
        api_reply(call, 200, pg_row_json(res, 0), NULL);
    }
    pg_result_free(res);
    pg_release(call->gw->pg, c);
}

void
api_wallet_reply(struct api_call *call, int64_t user_id)
{
    struct urlquery q;
    long long cursor, limit;
    if (page_params(call, &q, &cursor, &limit) != 0) {
        return;
    }
    urlquery_cleanup(&q);
    struct pg_error err;
    struct pg_result *bal = NULL, *res = NULL;
    struct pg_conn *c = api_pg(call);
    if (c == NULL) {
        return;
    }
    char uid[24], cur[24], lim[24];
    snprintf(uid, sizeof(uid), "%" PRId64, user_id);
    snprintf(cur, sizeof(cur), "%lld", cursor);
    snprintf(lim, sizeof(lim), "%lld", limit);
    const char *params[] = {uid, cur, lim};
    if (pg_exec(c, &wallet_balance, 1, params, &bal, &err) != 0 ||
        pg_exec(c, &ledger_page, 3, params, &res, &err) != 0) {
        api_pg_problem(call, &err);
    } else if (pg_rows(bal) != 1) {
        http_problem(call->req, 404, "not_found", "no such user", NULL);
    } else {
        cJSON *b = api_rows_page(res, limit);
        cJSON_AddNumberToObject(b, "user_id", (double)user_id);
        cJSON_AddNumberToObject(b, "balance", (double)pg_int(bal, 0, 0));
        api_reply(call, 200, b, NULL);
    }
    pg_result_free(bal);
    pg_result_free(res);
    pg_release(call->gw->pg, c);
}

void
api_user_wallet(struct api_call *call)
{
    api_wallet_reply(call, call->who.user_id);
}

/* Copies the fields a user may see of a chance category. */
static cJSON *
public_category(const cJSON *c)
{
    static const char *const keep[] = {"id",         "name",        "remaining",      "reward_min",
                                       "reward_max", "reward_step", "per_user_limit", "user_claims",
                                       "starts_at",  "ends_at"};
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; i < ARRAY_SIZE(keep); i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, keep[i]);
        if (v) {
            cJSON_AddItemToObject(o, keep[i], cJSON_Duplicate(v, 1));
        }
    }
    return o;
}

void
api_user_categories(struct api_call *call)
{
    struct gw *gw = call->gw;
    struct urlquery q;
    long long cursor, limit;
    if (page_params(call, &q, &cursor, &limit) != 0) {
        return;
    }
    bool have_cursor = urlquery_get(&q, "cursor") != NULL;
    urlquery_cleanup(&q);
    cJSON *data = cJSON_CreateObject();
    cJSON_AddBoolToObject(data, "claimable", true);
    cJSON_AddNumberToObject(data, "user", (double)call->who.user_id);
    cJSON_AddNumberToObject(data, "limit", (double)limit);
    if (have_cursor) {
        cJSON_AddNumberToObject(data, "after", (double)cursor);
    }
    cJSON *result = NULL;
    int st = rpc_client_call_sync(gw->chance, "chance.categories", data,
                                  (int)gw->conf->rpc_timeout_ms, &result, NULL, NULL);
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(result, "items");
    if (st != RPC_OK) {
        api_rpc_problem(call, "chance", st, result, NULL);
        cJSON_Delete(result);
        return;
    }
    if (!cJSON_IsArray(items)) {
        http_problem(call->req, 502, "upstream_error", "chance sent a malformed answer", NULL);
        cJSON_Delete(result);
        return;
    }
    cJSON *b = cJSON_CreateObject();
    cJSON *out = cJSON_AddArrayToObject(b, "items");
    const cJSON *it;
    cJSON_ArrayForEach (it, items) {
        const cJSON *mine = cJSON_GetObjectItemCaseSensitive(it, "user_claims");
        const cJSON *lim = cJSON_GetObjectItemCaseSensitive(it, "per_user_limit");
        /* Hide what this user may no longer claim: its own limit is reached. */
        if (json_is_int(mine) && json_is_int(lim) && mine->valuedouble >= lim->valuedouble) {
            continue;
        }
        cJSON_AddItemToArray(out, public_category(it));
    }
    const cJSON *next = cJSON_GetObjectItemCaseSensitive(result, "next_cursor");
    if (json_is_int(next)) {
        char buf[24];
        snprintf(buf, sizeof(buf), "%lld", (long long)next->valuedouble);
        cJSON_AddStringToObject(b, "next_cursor", buf);
    } else {
        cJSON_AddNullToObject(b, "next_cursor");
    }
    cJSON_Delete(result);
    api_reply(call, 200, b, NULL);
}
