/* Route table, dispatcher, shared input/output helpers and the operational endpoints. */
#include "api.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "assets.h"
#include "body.h"
#include "gw.h"
#include "json.h"
#include "log.h"
#include "gwmetrics.h"
#include "pg.h"
#include "rpc_client.h"

#define API_MAX_DEPTH 16 /* deepest JSON body any route needs, with room to spare */

#define PAGE "cursor limit"
#define E_AUTH "401 403"
#define E_BODY "400 413 415 422"

/* clang-format off */
const struct api_route api_routes[] = {
    {"GET", "/livez", API_PUBLIC, api_ops_livez, "ops", "Liveness: the process answers.", NULL, NULL, "Status", 200, ""},
    {"GET", "/readyz", API_PUBLIC, api_ops_readyz, "ops", "Readiness for load balancers: PostgreSQL and chance reachable, not draining (status only; the reasons and /metrics are on the health port).", NULL, NULL, "Status", 200, "503"},
    {"GET", "/api/v1/openapi.json", API_PUBLIC, api_ops_openapi, "ops", "This document.", NULL, NULL, NULL, 200, ""},
    {"POST", "/api/v1/auth/signup", API_PUBLIC, api_auth_signup, "auth", "Create an account and sign in.", NULL, "Credentials", "Session", 201, E_BODY " 409 429 503"},
    {"POST", "/api/v1/auth/login", API_PUBLIC, api_auth_login, "auth", "Sign in; returns a bearer token and sets the session cookie.", NULL, "Credentials", "Session", 200, E_BODY " 401 403 429 503"},
    {"POST", "/api/v1/auth/logout", API_USER, api_auth_logout, "auth", "Revoke the current session.", NULL, NULL, NULL, 204, E_AUTH " 503"},
    {"GET", "/api/v1/me", API_USER, api_user_me, "user", "The signed-in user and wallet balance.", NULL, NULL, "Me", 200, E_AUTH},
    {"GET", "/api/v1/categories", API_USER, api_user_categories, "user", "Categories the user can still claim from.", PAGE, NULL, "CategoryPage", 200, E_AUTH " 400 503"},
    {"POST", "/api/v1/claims", API_USER, api_claims_create, "user", "Claim a random code of a category and credit its reward (Idempotency-Key header: same key, same answer).", NULL, "ClaimRequest", "Claim", 201, E_AUTH " " E_BODY " 404 409 429 503"},
    {"GET", "/api/v1/claims", API_USER, api_user_claims, "user", "My claims, newest first.", PAGE, NULL, "ClaimPage", 200, E_AUTH " 400"},
    {"GET", "/api/v1/claims/{id}", API_USER, api_user_claim, "user", "One of my claims.", NULL, NULL, "ClaimRecord", 200, E_AUTH " 404"},
    {"GET", "/api/v1/wallet", API_USER, api_user_wallet, "user", "Balance and ledger, newest first.", PAGE, NULL, "Wallet", 200, E_AUTH " 400"},
    {"POST", "/api/v1/admin/batches", API_ADMIN, api_admin_batches, "admin", "Start generating categories of codes (Idempotency-Key header: same key, same batch); answers at once with the batch and its Location.", NULL, "BatchRequest", "Batch", 202, E_AUTH " " E_BODY " 503"},
    {"GET", "/api/v1/admin/batches/{id}", API_ADMIN, api_admin_batch, "admin", "A batch and its progress: state (generating, ready, failed), codes written, categories done.", NULL, NULL, "Batch", 200, E_AUTH " 404 503"},
    {"GET", "/api/v1/admin/categories", API_ADMIN, api_admin_categories, "admin", "Every category with its statistics.", PAGE, NULL, "CategoryPage", 200, E_AUTH " 400 503"},
    {"PATCH", "/api/v1/admin/categories/{id}", API_ADMIN, api_admin_category_patch, "admin", "Enable or disable a category, change its limit or window.", NULL, "CategoryPatch", "Category", 200, E_AUTH " " E_BODY " 404 503"},
    {"GET", "/api/v1/admin/codes", API_ADMIN, api_admin_codes, "admin", "Search codes.", "category status user code " PAGE, NULL, "CodePage", 200, E_AUTH " 400 404 503"},
    {"GET", "/api/v1/admin/users", API_ADMIN, api_admin_users, "admin", "Users, newest first; username filters by prefix.", "username " PAGE, NULL, "UserPage", 200, E_AUTH " 400"},
    {"GET", "/api/v1/admin/users/{id}/wallet", API_ADMIN, api_admin_user_wallet, "admin", "Any user's wallet and ledger.", PAGE, NULL, "Wallet", 200, E_AUTH " 400 404"},
    {"POST", "/api/v1/admin/users/{id}/disable", API_ADMIN, api_admin_user_disable, "admin", "Disable a user and revoke their sessions.", NULL, NULL, "User", 200, E_AUTH " 404 409"},
    {"POST", "/api/v1/admin/users/{id}/enable", API_ADMIN, api_admin_user_enable, "admin", "Enable a disabled user.", NULL, NULL, "User", 200, E_AUTH " 404"},
    {"GET", "/api/v1/admin/logs", API_ADMIN, api_logs_query, "admin", "Audit events, newest first (logger log.query).", "from to service type user category code q " PAGE, NULL, "LogPage", 200, E_AUTH " 400 422 503"},
    {"GET", "/api/v1/admin/logs.csv", API_ADMIN, api_logs_csv, "admin", "Audit events as CSV, streamed.", "from to service type user category code q", NULL, NULL, 200, E_AUTH " 400 422 503"},
    {"GET", "/api/v1/admin/logs/stats", API_ADMIN, api_logs_stats, "admin", "Event counts and rewards per hour or day (logger log.stats).", "from to bucket type", NULL, "LogStats", 200, E_AUTH " 400 422 503"},
};
const size_t api_nroutes = ARRAY_SIZE(api_routes);

const char *const api_route_names[] = {
    "GET /livez", "GET /readyz", "GET /api/v1/openapi.json",
    "POST /api/v1/auth/signup", "POST /api/v1/auth/login", "POST /api/v1/auth/logout",
    "GET /api/v1/me", "GET /api/v1/categories", "POST /api/v1/claims", "GET /api/v1/claims",
    "GET /api/v1/claims/{id}", "GET /api/v1/wallet", "POST /api/v1/admin/batches",
    "GET /api/v1/admin/batches/{id}",
    "GET /api/v1/admin/categories", "PATCH /api/v1/admin/categories/{id}",
    "GET /api/v1/admin/codes", "GET /api/v1/admin/users", "GET /api/v1/admin/users/{id}/wallet",
    "POST /api/v1/admin/users/{id}/disable", "POST /api/v1/admin/users/{id}/enable",
    "GET /api/v1/admin/logs", "GET /api/v1/admin/logs.csv", "GET /api/v1/admin/logs/stats",
};
/* clang-format on */

_Static_assert(ARRAY_SIZE(api_route_names) == ARRAY_SIZE(api_routes), "one name per route");

/* ---- routing ---- */

/* Matches path against a template; copies the {param} segment into call->param_buf. */
static bool
path_match(const char *tmpl, const char *path, struct api_call *call)
{
    const char *t = tmpl, *p = path;
    while (*t && *p) {
        if (*t == '{') {
            size_t n = strcspn(p, "/");
            if (n == 0 || n >= sizeof(call->param_buf)) {
                return false;
            }
            memcpy(call->param_buf, p, n);
            call->param_buf[n] = '\0';
            call->param = call->param_buf;
            p += n;
            t = strchr(t, '}') + 1;
        } else if (*t++ != *p++) {
            return false;
        }
    }
    return *t == '\0' && *p == '\0';
}

static const struct api_route *
route_find(struct api_call *call, const char *method, const char *path, struct sbuf *allow)
{
    for (size_t i = 0; i < api_nroutes; i++) {
        call->param = NULL;
        if (!path_match(api_routes[i].path, path, call)) {
            continue;
        }
        if (strcmp(api_routes[i].method, method) == 0) {
            return &api_routes[i];
        }
        sbuf_appendf(allow, "%s%s", allow->len ? ", " : "", api_routes[i].method);
    }
    return NULL;
}

static int64_t
mono_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void
api_dispatch(struct http_req *req, void *arg)
{
    struct gw *gw = arg;
    int64_t start = mono_usec();
    struct sbuf allow = {0};
    struct api_call call = {.gw = gw, .req = req};
    const struct api_route *r = route_find(&call, http_method(req), http_path(req), &allow);
    if (r == NULL && allow.len) {
        char hdr[128];
        snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", allow.data);
        http_problem(req, 405, "method_not_allowed", "this path does not accept that method", hdr);
    } else if (r == NULL) {
        if (strcmp(http_path(req), "/metrics") == 0) {
            /* Not the app's page either: a scraper pointed here should fail, not read HTML. */
            http_problem(req, 404, "route_not_found",
                         "metrics are served on the health port (gateway_health_listen)", NULL);
        } else if (!assets_serve(req)) { /* the web app's pages and files, else 404 */
            http_problem(req, 404, "route_not_found", "no such route", NULL);
        }
    } else {
        call.route = r;
        if (r->access == API_PUBLIC || auth_request(gw, req, &call.who) == 0) {
            if (r->access == API_ADMIN && !call.who.admin) {
                http_problem(req, 403, "forbidden", "this route is for administrators", NULL);
            } else {
                r->fn(&call);
            }
        }
    }
    sbuf_cleanup(&allow);
    int64_t usec = mono_usec() - start;
    gwmetrics_http(gw->metrics, r ? api_route_names[r - api_routes] : NULL, http_status(req), usec);
    int level = http_status(req) >= 500 ? LOG_WARN : LOG_DEBUG;
    log_at(level, "http_request", "method=%s route=\"%s\" status=%d ms=%lld client=%s",
           http_method(req), r ? r->path : "-", http_status(req), (long long)(usec / 1000),
           http_client_addr(req));
}

/* ---- input ---- */

static bool
is_json_type(const char *ct)
{
    static const char want[] = "application/json";
    if (ct == NULL || strncasecmp(ct, want, sizeof(want) - 1) != 0) {
        return false;
    }
    char next = ct[sizeof(want) - 1];
    return next == '\0' || next == ';' || next == ' ';
}

cJSON *
api_read_json(struct api_call *call, const char *const *allowed)
{
    struct http_req *req = call->req;
    char *body = NULL, err[160];
    size_t len = 0;
    if (!is_json_type(http_header(req, "Content-Type"))) {
        http_problem(req, 415, "unsupported_media_type", "send Content-Type: application/json",
                     NULL);
        return NULL;
    }
    int rc = http_read_body(req, (size_t)call->gw->conf->max_body_bytes, &body, &len);
    if (rc == HTTP_BODY_TOO_LARGE) {
        snprintf(err, sizeof(err), "the body exceeds %lld bytes", call->gw->conf->max_body_bytes);
        http_problem(req, 413, "body_too_large", err, NULL);
        return NULL;
    }
    if (rc != HTTP_BODY_OK) {
        http_problem(req, 400, "bad_body", "the body could not be read", NULL);
        return NULL;
    }
    cJSON *root = NULL;
    int check = body_check_raw(body, len, API_MAX_DEPTH);
    if (check != BODY_OK) {
        http_problem(req, 400, "bad_json", body_check_message(check), NULL);
        goto out;
    }
    const char *end = NULL;
    root = cJSON_ParseWithOpts(body, &end, 1);
    if (root == NULL) {
        http_problem(req, 400, "bad_json", "the body is not valid JSON", NULL);
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        http_problem(req, 422, "validation_failed", "expected a JSON object", NULL);
    } else if (json_has_duplicate_keys(root)) {
        http_problem(req, 400, "duplicate_key", "a key appears twice in one object", NULL);
    } else if (json_check_fields(root, allowed, err, sizeof(err)) != 0) {
        http_problem(req, 422, "unknown_field", err, NULL);
    } else {
        goto out; /* fine: keep root */
    }
    cJSON_Delete(root);
    root = NULL;
out:
    free(body);
    return root;
}

int
api_query(struct api_call *call, struct urlquery *q)
{
    const char *names[URLQUERY_MAX + 1];
    char spec[256], err[160];
    size_t n = 0;
    snprintf(spec, sizeof(spec), "%s", call->route->query ? call->route->query : "");
    for (char *save = NULL, *tok = strtok_r(spec, " ", &save); tok && n < URLQUERY_MAX;
         tok = strtok_r(NULL, " ", &save)) {
        names[n++] = tok;
    }
    names[n] = NULL;
    if (urlquery_parse(http_query(call->req), names, q, err, sizeof(err)) != 0) {
        urlquery_cleanup(q);
        http_problem(call->req, 400, "bad_query", err, NULL);
        return -1;
    }
    return 0;
}

int
api_query_int(struct api_call *call, const struct urlquery *q, const char *name, long long min,
              long long max, long long def, long long *out)
{
    const char *v = urlquery_get(q, name);
    *out = def;
    if (v == NULL) {
        return 0;
    }
    char *end = NULL;
    long long x = strtoll(v, &end, 10);
    bool digits = *v != '\0' && strspn(v, "-0123456789") == strlen(v) && strlen(v) <= 19;
    if (!digits || *end != '\0' || x < min || x > max) {
        char err[160];
        snprintf(err, sizeof(err), "query parameter '%s' must be an integer from %lld to %lld",
                 name, min, max);
        http_problem(call->req, 400, "bad_query", err, NULL);
        return -1;
    }
    *out = x;
    return 0;
}

int
api_param_id(struct api_call *call, int64_t *out)
{
    const char *p = call->param;
    if (p && *p && *p != '0' && strspn(p, "0123456789") == strlen(p) && strlen(p) <= 15) {
        *out = strtoll(p, NULL, 10);
        return 0;
    }
    http_problem(call->req, 404, "not_found", "no such object", NULL);
    return -1;
}

/* ---- failures ---- */

struct pg_conn *
api_pg(struct api_call *call)
{
    struct pg_error err;
    struct pg_conn *c = pg_acquire(call->gw->pg, (int)call->gw->conf->pg_acquire_timeout_ms, &err);
    if (c == NULL) {
        api_pg_problem(call, &err);
    }
    return c;
}

void
api_pg_problem(struct api_call *call, const struct pg_error *err)
{
    if (err->cls == PG_ERR_CONNECTION || err->cls == PG_ERR_TIMEOUT) {
        gw_pg_status(call->gw, err->cls != PG_ERR_CONNECTION);
        log_warn("pg_unavailable", "route=\"%s\" reason=\"%s\"", call->route->path, err->message);
        http_problem(call->req, 503, "unavailable", "the database is unavailable",
                     "Retry-After: 1\r\n");
        return;
    }
    log_error("pg_failed", "route=\"%s\" sqlstate=%s reason=\"%s\"", call->route->path,
              err->sqlstate, err->message);
    http_problem(call->req, 500, "internal", "the request failed; it was not applied", NULL);
}

void
api_rpc_problem(struct api_call *call, const char *service, int status, const cJSON *err,
                const char *const *map)
{
    char detail[200];
    if (status == RPC_TIMEOUT || status == RPC_LOST) {
        snprintf(detail, sizeof(detail), "%s did not answer in time", service);
        http_problem(call->req, 504, "upstream_timeout", detail, NULL);
        return;
    }
    if (status != RPC_ERROR) {
        snprintf(detail, sizeof(detail), "%s is unavailable", service);
        http_problem(call->req, 503, "unavailable", detail, "Retry-After: 1\r\n");
        return;
    }
    const char *code = rpc_client_err_code(err);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(err, "message");
    const char *msg = cJSON_IsString(m) ? m->valuestring : NULL;
    for (const char *const *p = map; p && *p; p += 2) {
        if (strcmp(code, p[0]) == 0) {
            http_problem(call->req, atoi(p[1]), code, msg, NULL);
            return;
        }
    }
    if (strcmp(code, "bad_request") == 0) {
        http_problem(call->req, 422, "validation_failed", msg, NULL);
    } else if (strcmp(code, "unavailable") == 0) {
        snprintf(detail, sizeof(detail), "%s's storage is unavailable", service);
        http_problem(call->req, 503, "unavailable", detail, "Retry-After: 1\r\n");
    } else {
        log_warn("rpc_unexpected_error", "service=%s code=\"%.64s\"", service, code);
        snprintf(detail, sizeof(detail), "%s failed", service);
        http_problem(call->req, 502, "upstream_error", detail, NULL);
    }
}

void
api_reply(struct api_call *call, int status, cJSON *body, const char *extra_headers)
{
    http_reply_json(call->req, status, body, extra_headers);
    cJSON_Delete(body);
}

void
api_rate_limited(struct api_call *call, int retry_after_s, const char *what)
{
    char hdr[48], detail[96];
    snprintf(hdr, sizeof(hdr), "Retry-After: %d\r\n", retry_after_s);
    snprintf(detail, sizeof(detail), "too many %s; retry after %d s", what, retry_after_s);
    gwmetrics_count(call->gw->metrics, M_RATE_LIMITED, 1);
    http_problem(call->req, 429, "rate_limited", detail, hdr);
}

/* ---- operations ---- */

void
api_ops_livez(struct api_call *call)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "status", "ok");
    api_reply(call, 200, b, NULL);
}

/* The bare status for a load balancer on the public port: which dependency is down, and the
 * metrics, are for operators (gateway_health_listen), not for whoever can reach the API. */
void
api_ops_readyz(struct api_call *call)
{
    struct gw *gw = call->gw;
    bool stopping = __atomic_load_n(&gw->stopping, __ATOMIC_RELAXED);
    bool pg = __atomic_load_n(&gw->pg_up, __ATOMIC_RELAXED);
    bool chance = __atomic_load_n(&gw->chance_up, __ATOMIC_RELAXED);
    bool ready = !stopping && pg && chance;
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "status", ready ? "ready" : "not_ready");
    api_reply(call, ready ? 200 : 503, b, NULL);
}

void
api_ops_openapi(struct api_call *call)
{
    const char *doc = call->gw->openapi;
    http_reply(call->req, 200, "application/json", NULL, doc, strlen(doc));
}

cJSON *
api_rows_page(const struct pg_result *res, long long limit)
{
    cJSON *b = cJSON_CreateObject();
    cJSON *items = cJSON_AddArrayToObject(b, "items");
    int n = pg_rows(res);
    for (int i = 0; i < n; i++) {
        cJSON_AddItemToArray(items, pg_row_json(res, i));
    }
    if (n == limit && n > 0) {
        cJSON_AddStringToObject(b, "next_cursor", pg_text(res, n - 1, pg_col(res, "_cursor")));
    } else {
        cJSON_AddNullToObject(b, "next_cursor");
    }
    return b;
}
