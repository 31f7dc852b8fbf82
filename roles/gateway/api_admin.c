/* Admin routes: batches, categories, codes (through chance) and users (PostgreSQL). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "audit.h"
#include "crypto.h"
#include "gw.h"
#include "json.h"
#include "log.h"
#include "pg.h"
#include "rpc_client.h"

#define PAGE_MAX 1000
#define ID_MAX 9007199254740991LL

static const char *const category_errors[] = {"category_not_found",
                                              "404",
                                              "too_many_codes",
                                              "422",
                                              "code_not_found",
                                              "404",
                                              "batch_not_found",
                                              "404",
                                              NULL};

static const struct pg_stmt users_page = {
    "admin_users_page",
    "SELECT u.id AS _cursor, u.id, u.username, u.role, u.disabled,"
    " (extract(epoch FROM u.created_at) * 1000)::bigint AS created_at,"
    " coalesce(w.balance, 0) AS balance FROM users u LEFT JOIN wallets w ON w.user_id = u.id"
    " WHERE u.id < $1 AND ($2 = '' OR starts_with(lower(u.username), lower($2)))"
    " ORDER BY u.id DESC LIMIT $3"};
static const struct pg_stmt user_set_disabled = {
    "admin_user_set_disabled", "UPDATE users SET disabled = $2, updated_at = now() WHERE id = $1"
                               " RETURNING id, username, role, disabled"};
enum { SETDIS_COL_ID, SETDIS_COL_NAME, SETDIS_COL_ROLE, SETDIS_COL_DISABLED };

static cJSON *
actor_json(const struct api_call *call)
{
    cJSON *a = cJSON_CreateObject();
    cJSON_AddNumberToObject(a, "id", (double)call->who.user_id);
    cJSON_AddStringToObject(a, "username", call->who.username);
    cJSON_AddStringToObject(a, "role", "admin");
    return a;
}

/* Calls chance and answers with its result (status on success), or with the mapped problem. */
static void
chance_passthrough(struct api_call *call, const char *cmd, cJSON *data, int timeout_ms, int status)
{
    cJSON *result = NULL;
    int st = rpc_client_call_sync(call->gw->chance, cmd, data, timeout_ms, &result, NULL, NULL);
    if (st == RPC_OK && cJSON_IsObject(result)) {
        /* chance's numeric cursors become strings, as every cursor of this API is. */
        cJSON *next = cJSON_GetObjectItemCaseSensitive(result, "next_cursor");
        if (json_is_int(next)) {
            char buf[24];
            snprintf(buf, sizeof(buf), "%lld", (long long)next->valuedouble);
            cJSON_ReplaceItemInObjectCaseSensitive(result, "next_cursor", cJSON_CreateString(buf));
        }
        api_reply(call, status, result, NULL);
        return;
    }
    if (st == RPC_OK) {
        http_problem(call->req, 502, "upstream_error", "chance sent a malformed answer", NULL);
    } else {
        api_rpc_problem(call, "chance", st, result, category_errors);
    }
    cJSON_Delete(result);
}

/* Copies the listed fields of body into data after a type check; -1 after answering 422. */
static int
copy_fields(struct api_call *call, const cJSON *body, cJSON *data, const char *const *ints,
            const char *const *strings, const char *const *bools, bool nullable_ints)
{
    char err[160];
    for (const char *const *k = ints; k && *k; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, *k);
        long long x;
        if (v && cJSON_IsNull(v) && nullable_ints) {
            cJSON_AddNullToObject(data, *k);
        } else if (v) {
            if (json_get_int(body, *k, true, 0, ID_MAX, &x, err, sizeof(err)) != 0) {
                goto bad;
            }
            cJSON_AddNumberToObject(data, *k, (double)x);
        }
    }
    for (const char *const *k = strings; k && *k; k++) {
        const char *s = NULL;
        if (json_get_string(body, *k, false, 100, &s, err, sizeof(err)) != 0) {
            goto bad;
        }
        if (s) {
            cJSON_AddStringToObject(data, *k, s);
        }
    }
    for (const char *const *k = bools; k && *k; k++) {
        bool b = false;
        if (cJSON_GetObjectItemCaseSensitive(body, *k)) {
            if (json_get_bool(body, *k, true, &b, err, sizeof(err)) != 0) {
                goto bad;
            }
            cJSON_AddBoolToObject(data, *k, b);
        }
    }
    return 0;
bad:
    http_problem(call->req, 422, "validation_failed", err, NULL);
    return -1;
}

void
api_admin_batches(struct api_call *call)
{
    static const char *const fields[] = {
        "categories", "codes_per_category", "reward_min", "reward_max", "reward_step", "name",
        "prefix",     "per_user_limit",     "starts_at",  "ends_at",    NULL};
    static const char *const ints[] = {
        "categories",     "codes_per_category", "reward_min", "reward_max", "reward_step",
        "per_user_limit", "starts_at",          "ends_at",    NULL};
    static const char *const strings[] = {"name", "prefix", NULL};
    cJSON *body = api_read_json(call, fields);
    if (body == NULL) {
        return;
    }
    cJSON *data = cJSON_CreateObject();
    if (copy_fields(call, body, data, ints, strings, NULL, false) != 0) {
        cJSON_Delete(data);
        cJSON_Delete(body);
        return;
    }
    cJSON_Delete(body);
    /* Generation is idempotent per batch key: the admin's Idempotency-Key (hashed with the
     * admin's id, so keys never collide across admins), or a fresh one per request. */
    const char *key = http_header(call->req, "Idempotency-Key");
    char batch_key[CRYPTO_SHA256_HEX];
    if (key) {
        char *material = xasprintf("batch:%s:%s", call->who.id, key);
        crypto_sha256_hex(material, strlen(material), batch_key);
        free(material);
        batch_key[32] = '\0';
    } else {
        util_random_hex(batch_key, 16);
    }
    cJSON_AddStringToObject(data, "batch_key", batch_key);
    cJSON_AddItemToObject(data, "actor", actor_json(call));
    cJSON *result = NULL;
    int st = rpc_client_call_sync(call->gw->chance, "chance.generate", data,
                                  (int)call->gw->conf->rpc_timeout_ms, &result, NULL, NULL);
    const cJSON *batch = cJSON_GetObjectItemCaseSensitive(result, "batch");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(batch, "id");
    if (st == RPC_OK && json_is_int(id)) {
        /* The batch is recorded; its codes are being written: 202 and where to watch. */
        char loc[96];
        snprintf(loc, sizeof(loc), "Location: /api/v1/admin/batches/%lld\r\n",
                 (long long)id->valuedouble);
        api_reply(call, 202, result, loc);
        return;
    }
    if (st == RPC_OK) {
        http_problem(call->req, 502, "upstream_error", "chance sent a malformed answer", NULL);
    } else {
        api_rpc_problem(call, "chance", st, result, category_errors);
    }
    cJSON_Delete(result);
}

void
api_admin_batch(struct api_call *call)
{
    int64_t id;
    if (api_param_id(call, &id) != 0) {
        return;
    }
    cJSON *data = cJSON_CreateObject();
    cJSON_AddNumberToObject(data, "id", (double)id);
    chance_passthrough(call, "chance.batch", data, (int)call->gw->conf->rpc_timeout_ms, 200);
}

void
api_admin_categories(struct api_call *call)
{
    struct urlquery q;
    long long cursor = 0, limit = 100;
    if (api_query(call, &q) != 0) {
        return;
    }
    int rc = api_query_int(call, &q, "cursor", 1, ID_MAX, 0, &cursor) == 0 &&
                     api_query_int(call, &q, "limit", 1, PAGE_MAX, 100, &limit) == 0
                 ? 0
                 : -1;
    urlquery_cleanup(&q);
    if (rc != 0) {
        return;
    }
    cJSON *data = cJSON_CreateObject();
    cJSON_AddNumberToObject(data, "limit", (double)limit);
    if (cursor > 0) {
        cJSON_AddNumberToObject(data, "after", (double)cursor);
    }
    chance_passthrough(call, "chance.categories", data, (int)call->gw->conf->rpc_timeout_ms, 200);
}

void
api_admin_category_patch(struct api_call *call)
{
    static const char *const fields[] = {"enabled", "per_user_limit", "starts_at", "ends_at", NULL};
    static const char *const ints[] = {"per_user_limit", "starts_at", "ends_at", NULL};
    static const char *const bools[] = {"enabled", NULL};
    int64_t id;
    if (api_param_id(call, &id) != 0) {
        return;
    }
    cJSON *body = api_read_json(call, fields);
    if (body == NULL) {
        return;
    }
    cJSON *data = cJSON_CreateObject();
    cJSON_AddNumberToObject(data, "category", (double)id);
    if (copy_fields(call, body, data, ints, NULL, bools, true) != 0) {
        cJSON_Delete(data);
    } else if (cJSON_GetArraySize(body) == 0) {
        http_problem(call->req, 422, "validation_failed", "nothing to change", NULL);
        cJSON_Delete(data);
    } else {
        cJSON_AddItemToObject(data, "actor", actor_json(call));
        chance_passthrough(call, "chance.category.update", data,
                           (int)call->gw->conf->rpc_timeout_ms, 200);
    }
    cJSON_Delete(body);
}

void
api_admin_codes(struct api_call *call)
{
    struct urlquery q;
    long long category = 0, user = 0, limit = 100;
    if (api_query(call, &q) != 0) {
        return;
    }
    const char *status = urlquery_get(&q, "status"), *code = urlquery_get(&q, "code");
    const char *cursor = urlquery_get(&q, "cursor");
    cJSON *data = cJSON_CreateObject();
    if (api_query_int(call, &q, "category", 1, ID_MAX, 0, &category) != 0 ||
        api_query_int(call, &q, "user", 1, ID_MAX, 0, &user) != 0 ||
        api_query_int(call, &q, "limit", 1, PAGE_MAX, 100, &limit) != 0) {
        goto out;
    }
    if ((status && strcmp(status, "available") != 0 && strcmp(status, "assigned") != 0) ||
        (code && (strlen(code) == 0 || strlen(code) > 64)) ||
        (cursor && (strlen(cursor) == 0 || strlen(cursor) > 128))) {
        http_problem(call->req, 400, "bad_query",
                     "status is available or assigned; code and cursor are 1 to 64/128 bytes",
                     NULL);
        goto out;
    }
    if (category) {
        cJSON_AddNumberToObject(data, "category", (double)category);
    }
    if (user) {
        cJSON_AddNumberToObject(data, "user", (double)user);
    }
    if (status) {
        cJSON_AddStringToObject(data, "status", status);
    }
    if (code) {
        cJSON_AddStringToObject(data, "code", code);
    }
    if (cursor) {
        cJSON_AddStringToObject(data, "cursor", cursor);
    }
    cJSON_AddNumberToObject(data, "limit", (double)limit);
    chance_passthrough(call, "chance.codes", data, (int)call->gw->conf->rpc_timeout_ms, 200);
    data = NULL;
out:
    cJSON_Delete(data);
    urlquery_cleanup(&q);
}

void
api_admin_users(struct api_call *call)
{
    struct urlquery q;
    long long cursor = ID_MAX, limit = 50;
    if (api_query(call, &q) != 0) {
        return;
    }
    const char *prefix = urlquery_get(&q, "username");
    char cur[24], lim[24], pfx[72] = "";
    if (api_query_int(call, &q, "cursor", 1, ID_MAX, ID_MAX, &cursor) != 0 ||
        api_query_int(call, &q, "limit", 1, PAGE_MAX, 50, &limit) != 0) {
        urlquery_cleanup(&q);
        return;
    }
    snprintf(pfx, sizeof(pfx), "%.64s", prefix ? prefix : "");
    urlquery_cleanup(&q);
    struct pg_error err;
    struct pg_result *res = NULL;
    struct pg_conn *c = api_pg(call);
    if (c == NULL) {
        return;
    }
    snprintf(cur, sizeof(cur), "%lld", cursor);
    snprintf(lim, sizeof(lim), "%lld", limit);
    const char *params[] = {cur, pfx, lim};
    if (pg_exec(c, &users_page, 3, params, &res, &err) != 0) {
        api_pg_problem(call, &err);
    } else {
        api_reply(call, 200, api_rows_page(res, limit), NULL);
    }
    pg_result_free(res);
    pg_release(call->gw->pg, c);
}

void
api_admin_user_wallet(struct api_call *call)
{
    int64_t id;
    if (api_param_id(call, &id) == 0) {
        api_wallet_reply(call, id);
    }
}

struct disable {
    struct api_call *call;
    int64_t id;
    bool disabled;
    struct pg_result *res; /* out: user_set_disabled's row; no row = no such user */
};

/* Sets users.disabled, revoking sessions when disabling, with its audit event. */
static int
apply_disable(struct pg_conn *c, void *arg, char **event, struct pg_error *err)
{
    struct disable *d = arg;
    struct api_call *call = d->call;
    char uid[24], msg[200];
    snprintf(uid, sizeof(uid), "%" PRId64, d->id);
    const char *params[] = {uid, d->disabled ? "true" : "false"};
    if (pg_exec(c, &user_set_disabled, 2, params, &d->res, err) != 0) {
        return -1;
    }
    if (pg_rows(d->res) != 1) {
        return 0;
    }
    if (d->disabled && auth_user_revoke(call->gw, c, d->id, err) != 0) {
        return -1;
    }
    const char *name = pg_text(d->res, 0, SETDIS_COL_NAME);
    snprintf(msg, sizeof(msg), "admin %s %s user %s", call->who.username,
             d->disabled ? "disabled" : "enabled", name);
    struct audit_actor actor = {call->who.id, call->who.username, "admin"};
    cJSON *subject = cJSON_CreateObject();
    cJSON_AddStringToObject(subject, "user_id", uid);
    cJSON_AddStringToObject(subject, "username", name);
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "action", d->disabled ? "user.disable" : "user.enable");
    *event =
        audit_event(d->disabled ? "user.disabled" : "admin.action", &actor, subject, data, msg);
    return 1;
}

static void
set_disabled(struct api_call *call, bool disabled)
{
    struct gw *gw = call->gw;
    int64_t id;
    if (api_param_id(call, &id) != 0) {
        return;
    }
    if (disabled && id == call->who.user_id) {
        http_problem(call->req, 409, "cannot_disable_self", "an admin cannot disable itself", NULL);
        return;
    }
    struct pg_error err = {0};
    struct pg_conn *c = api_pg(call);
    if (c == NULL) {
        return;
    }
    struct disable d = {call, id, disabled, NULL};
    int rc = audit_commit(c, gw->relay, apply_disable, &d, &err);
    if (rc < 0) {
        api_pg_problem(call, &err);
    } else if (rc == 0) {
        http_problem(call->req, 404, "not_found", "no such user", NULL);
    } else {
        cJSON *b = cJSON_CreateObject();
        cJSON_AddNumberToObject(b, "id", (double)id);
        cJSON_AddStringToObject(b, "username", pg_text(d.res, 0, SETDIS_COL_NAME));
        cJSON_AddStringToObject(b, "role", pg_text(d.res, 0, SETDIS_COL_ROLE));
        cJSON_AddBoolToObject(b, "disabled", pg_bool(d.res, 0, SETDIS_COL_DISABLED));
        api_reply(call, 200, b, NULL);
    }
    pg_result_free(d.res);
    pg_release(gw->pg, c);
}

void
api_admin_user_disable(struct api_call *call)
{
    set_disabled(call, true);
}

void
api_admin_user_enable(struct api_call *call)
{
    set_disabled(call, false);
}
