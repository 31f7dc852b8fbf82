/*
 * The HTTP API: the route table (also the source of the OpenAPI document), the dispatcher, and
 * helpers every handler uses to read input and map failures to problem+json answers.
 * Handlers run on HTTP worker threads (http.h); they may block on PostgreSQL and synchronous RPC.
 */
#ifndef CHANCED_GATEWAY_API_H
#define CHANCED_GATEWAY_API_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "http.h"
#include "urlquery.h"
#include "util.h"

struct gw;
struct pg_conn;
struct pg_error;
struct pg_result;

enum api_access {
    API_PUBLIC, /* no token needed */
    API_USER,   /* any signed-in, enabled user */
    API_ADMIN,  /* role admin, checked on every request */
};

struct api_call;
typedef void (*api_fn)(struct api_call *call);

struct api_route {
    const char *method;     /* "GET", "POST", ... */
    const char *path;       /* "/api/v1/claims/{id}": at most one {param} segment */
    enum api_access access; /* who may call it */
    api_fn fn;              /* the handler */
    const char *tag;        /* OpenAPI tag */
    const char *summary;    /* one line, for the OpenAPI document */
    const char *query;      /* space-separated accepted query parameters, or NULL */
    const char *body;       /* OpenAPI schema name of the JSON body, or NULL */
    const char *reply;      /* OpenAPI schema name of the success body, or NULL */
    int status;             /* success status */
    const char *errors;     /* space-separated problem statuses, for the document */
};

/* One request in flight; lives on the worker's stack. */
struct api_call {
    struct gw *gw;                 /* borrowed */
    struct http_req *req;          /* borrowed */
    const struct api_route *route; /* the matched route */
    struct principal who;          /* valid unless the route is public */
    const char *param;             /* the {param} segment, or NULL (points into param_buf) */
    char param_buf[128];           /* storage of param */
};

extern const struct api_route api_routes[];
extern const size_t api_nroutes;
/* Labels "METHOD path" of every route, for metrics (same order as api_routes). */
extern const char *const api_route_names[];

/* The HTTP handler: routes, authenticates, authorises, times and counts. arg is gw. */
void api_dispatch(struct http_req *req, void *arg);

/*
 * Reads the JSON object body: checks Content-Type, size (413), UTF-8, NUL escapes, nesting depth,
 * syntax, duplicate keys and unknown fields (allowed: NULL-terminated). Returns a new tree (caller
 * frees with cJSON_Delete), or NULL after sending the problem.
 */
cJSON *api_read_json(struct api_call *call, const char *const *allowed);
/* Parses the query string against the route's accepted names; -1 after sending 400. */
int api_query(struct api_call *call, struct urlquery *q) MUSTCHECK;
/* Reads an integer query parameter in [min, max] (def if absent); -1 after sending 400. */
int api_query_int(struct api_call *call, const struct urlquery *q, const char *name, long long min,
                  long long max, long long def, long long *out) MUSTCHECK;
/* The path parameter as a positive integer id; -1 after sending 404. */
int api_param_id(struct api_call *call, int64_t *out) MUSTCHECK;

/* Borrows a PostgreSQL connection; NULL after sending 503. Release with pg_release. */
struct pg_conn *api_pg(struct api_call *call);
/* Sends 503/500 for a PostgreSQL failure (logged here). */
void api_pg_problem(struct api_call *call, const struct pg_error *err);
/*
 * Sends the problem for a failed RPC: RPC_ERROR maps the callee's code through map (pairs of
 * code and status, NULL-terminated; unknown codes become 502), the transport failures 503/504.
 */
void api_rpc_problem(struct api_call *call, const char *service, int status, const cJSON *err,
                     const char *const *map);
/* Sends a 200/201 JSON answer and frees body. */
void api_reply(struct api_call *call, int status, cJSON *body, const char *extra_headers);
/* Sends 429 with Retry-After and counts it. */
void api_rate_limited(struct api_call *call, int retry_after_s, const char *what);

/* Handlers, by file. */
void api_ops_livez(struct api_call *call);
void api_ops_readyz(struct api_call *call);
void api_ops_openapi(struct api_call *call);
void api_auth_signup(struct api_call *call);
void api_auth_login(struct api_call *call);
void api_auth_logout(struct api_call *call);
void api_user_me(struct api_call *call);
void api_user_categories(struct api_call *call);
void api_user_claims(struct api_call *call);
void api_user_claim(struct api_call *call);
void api_user_wallet(struct api_call *call);
void api_claims_create(struct api_call *call);
void api_admin_batches(struct api_call *call);
void api_admin_batch(struct api_call *call);
void api_admin_categories(struct api_call *call);
void api_admin_category_patch(struct api_call *call);
void api_admin_codes(struct api_call *call);
void api_admin_users(struct api_call *call);
void api_admin_user_wallet(struct api_call *call);
void api_admin_user_disable(struct api_call *call);
void api_admin_user_enable(struct api_call *call);
void api_logs_query(struct api_call *call);
void api_logs_csv(struct api_call *call);
void api_logs_stats(struct api_call *call);

/* Usernames: 3..32 of [A-Za-z0-9._-], starting with a letter or digit. */
bool api_username_ok(const char *username);
/*
 * A page of rows as {items: [pg_row_json of each], next_cursor}: next_cursor is the last row's
 * `_cursor` column when the page is full, else null.
 */
cJSON *api_rows_page(const struct pg_result *res, long long limit);
/* Shared by user and admin wallet views: writes {balance, items, next_cursor} for user_id. */
void api_wallet_reply(struct api_call *call, int64_t user_id);

#endif
