/*
 * OpenAPI document: paths come from api_routes (so the document cannot drift from the router),
 * schemas from the text below.
 */
#include "openapi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "http.h"

/* clang-format off */
static const char schemas[] =
"{"
"\"Problem\":{\"type\":\"object\",\"description\":\"RFC 9457 problem details; `code` is stable.\","
"  \"required\":[\"type\",\"title\",\"status\",\"code\"],\"properties\":{"
"  \"type\":{\"type\":\"string\"},\"title\":{\"type\":\"string\"},\"status\":{\"type\":\"integer\"},"
"  \"code\":{\"type\":\"string\"},\"detail\":{\"type\":\"string\"},\"instance\":{\"type\":\"string\"},"
"  \"request_id\":{\"type\":\"string\"}}},"
"\"Status\":{\"type\":\"object\",\"properties\":{\"status\":{\"type\":\"string\"}}},"
"\"Credentials\":{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"username\",\"password\"],"
"  \"properties\":{\"username\":{\"type\":\"string\",\"minLength\":3,\"maxLength\":32,\"pattern\":\"^[A-Za-z0-9][A-Za-z0-9._-]*$\"},"
"  \"password\":{\"type\":\"string\",\"minLength\":8,\"maxLength\":256}}},"
"\"User\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},\"username\":{\"type\":\"string\"},"
"  \"role\":{\"type\":\"string\",\"enum\":[\"user\",\"admin\"]},\"disabled\":{\"type\":\"boolean\"}}},"
"\"Session\":{\"type\":\"object\",\"properties\":{\"token\":{\"type\":\"string\"},\"token_type\":{\"const\":\"Bearer\"},"
"  \"expires_at\":{\"type\":\"integer\",\"description\":\"epoch ms\"},\"csrf_token\":{\"type\":\"string\"},"
"  \"user\":{\"$ref\":\"#/components/schemas/User\"}}},"
"\"Me\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},\"username\":{\"type\":\"string\"},"
"  \"role\":{\"type\":\"string\"},\"created_at\":{\"type\":\"integer\"},\"balance\":{\"type\":\"integer\",\"description\":\"Toman\"}}},"
"\"Category\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},\"name\":{\"type\":\"string\"},"
"  \"remaining\":{\"type\":\"integer\"},\"reward_min\":{\"type\":\"integer\"},\"reward_max\":{\"type\":\"integer\"},"
"  \"reward_step\":{\"type\":\"integer\"},\"per_user_limit\":{\"type\":\"integer\"},\"user_claims\":{\"type\":\"integer\"},"
"  \"starts_at\":{\"type\":[\"integer\",\"null\"]},\"ends_at\":{\"type\":[\"integer\",\"null\"]},"
"  \"total\":{\"type\":\"integer\"},\"assigned\":{\"type\":\"integer\"},\"paid_out\":{\"type\":\"integer\"},"
"  \"enabled\":{\"type\":\"boolean\"},\"claimable\":{\"type\":\"boolean\"}}},"
"\"CategoryPage\":{\"type\":\"object\",\"properties\":{\"items\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/Category\"}},"
"  \"next_cursor\":{\"type\":[\"string\",\"null\"]}}},"
"\"CategoryPatch\":{\"type\":\"object\",\"additionalProperties\":false,\"minProperties\":1,\"properties\":{"
"  \"enabled\":{\"type\":\"boolean\"},\"per_user_limit\":{\"type\":\"integer\",\"minimum\":1},"
"  \"starts_at\":{\"type\":[\"integer\",\"null\"]},\"ends_at\":{\"type\":[\"integer\",\"null\"]}}},"
"\"ClaimRequest\":{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"category\"],"
"  \"properties\":{\"category\":{\"type\":\"integer\",\"minimum\":1}}},"
"\"Claim\":{\"type\":\"object\",\"description\":\"201: credited. 202: status pending (outcome unknown; poll GET /claims/{id} or retry with the same Idempotency-Key).\","
"  \"properties\":{\"claim_id\":{\"type\":\"string\"},\"status\":{\"type\":\"string\",\"enum\":[\"credited\",\"pending\"]},"
"  \"code\":{\"type\":\"string\"},\"category\":{\"type\":\"integer\"},\"reward\":{\"type\":\"integer\"},\"balance\":{\"type\":\"integer\"}}},"
"\"ClaimRecord\":{\"type\":\"object\",\"properties\":{\"claim_id\":{\"type\":\"string\"},\"category\":{\"type\":\"integer\"},"
"  \"status\":{\"type\":\"string\",\"enum\":[\"pending\",\"credited\",\"failed\"]},\"code\":{\"type\":\"string\"},"
"  \"reward\":{\"type\":\"integer\"},\"error\":{\"type\":\"string\"},\"created_at\":{\"type\":\"integer\"},\"updated_at\":{\"type\":\"integer\"}}},"
"\"ClaimPage\":{\"type\":\"object\",\"properties\":{\"items\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/ClaimRecord\"}},"
"  \"next_cursor\":{\"type\":[\"string\",\"null\"]}}},"
"\"Wallet\":{\"type\":\"object\",\"properties\":{\"user_id\":{\"type\":\"integer\"},\"balance\":{\"type\":\"integer\"},"
"  \"items\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},"
"  \"claim_id\":{\"type\":\"string\"},\"code\":{\"type\":\"string\"},\"category\":{\"type\":\"integer\"},"
"  \"amount\":{\"type\":\"integer\"},\"balance_after\":{\"type\":\"integer\"},\"source\":{\"type\":\"string\"},"
"  \"created_at\":{\"type\":\"integer\"}}}},\"next_cursor\":{\"type\":[\"string\",\"null\"]}}},"
"\"BatchRequest\":{\"type\":\"object\",\"additionalProperties\":false,"
"  \"required\":[\"categories\",\"codes_per_category\",\"reward_min\",\"reward_max\"],\"properties\":{"
"  \"categories\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000},\"codes_per_category\":{\"type\":\"integer\",\"minimum\":1},"
"  \"reward_min\":{\"type\":\"integer\",\"minimum\":1},\"reward_max\":{\"type\":\"integer\",\"minimum\":1},"
"  \"reward_step\":{\"type\":\"integer\",\"minimum\":1},\"name\":{\"type\":\"string\",\"maxLength\":100},"
"  \"prefix\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9]{1,8}$\"},\"per_user_limit\":{\"type\":\"integer\",\"minimum\":1},"
"  \"starts_at\":{\"type\":\"integer\"},\"ends_at\":{\"type\":\"integer\"}}},"
"\"Batch\":{\"type\":\"object\",\"properties\":{\"batch\":{\"type\":\"object\",\"properties\":{"
"  \"id\":{\"type\":\"integer\"},\"name\":{\"type\":\"string\"},"
"  \"state\":{\"type\":\"string\",\"enum\":[\"generating\",\"ready\",\"failed\"]},"
"  \"categories\":{\"type\":\"array\",\"items\":{\"type\":\"integer\"}},"
"  \"codes_per_category\":{\"type\":\"integer\"},\"total\":{\"type\":\"integer\"},"
"  \"codes_written\":{\"type\":\"integer\"},\"categories_done\":{\"type\":\"integer\"},"
"  \"total_reward\":{\"type\":[\"integer\",\"null\"]},\"error\":{\"type\":[\"string\",\"null\"]},"
"  \"created_at\":{\"type\":\"integer\"},\"finished_at\":{\"type\":[\"integer\",\"null\"]}}}}},"
"\"CodePage\":{\"type\":\"object\",\"properties\":{\"items\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{"
"  \"code\":{\"type\":\"string\"},\"category\":{\"type\":\"integer\"},\"reward\":{\"type\":\"integer\"},"
"  \"status\":{\"type\":\"string\",\"enum\":[\"available\",\"assigned\"]},\"user_id\":{\"type\":\"string\"},"
"  \"username\":{\"type\":\"string\"},\"claim_id\":{\"type\":\"string\"},\"assigned_at\":{\"type\":\"integer\"}}}},"
"  \"next_cursor\":{\"type\":[\"string\",\"null\"]}}},"
"\"UserPage\":{\"type\":\"object\",\"properties\":{\"items\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/User\"}},"
"  \"next_cursor\":{\"type\":[\"string\",\"null\"]}}},"
"\"LogPage\":{\"type\":\"object\",\"properties\":{\"items\":{\"type\":\"array\",\"items\":{\"type\":\"object\"}},"
"  \"next_cursor\":{\"type\":[\"string\",\"null\"]}}},"
"\"LogStats\":{\"type\":\"object\",\"properties\":{\"buckets\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{"
"  \"start\":{\"type\":\"integer\"},\"type\":{\"type\":\"string\"},\"count\":{\"type\":\"integer\"},\"reward\":{\"type\":\"integer\"}}}}}}"
"}";
/* clang-format on */

static void
add_query_params(cJSON *params, const char *query)
{
    char spec[256];
    snprintf(spec, sizeof(spec), "%s", query);
    for (char *save = NULL, *tok = strtok_r(spec, " ", &save); tok;
         tok = strtok_r(NULL, " ", &save)) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "name", tok);
        cJSON_AddStringToObject(p, "in", "query");
        cJSON *s = cJSON_AddObjectToObject(p, "schema");
        bool integer = strcmp(tok, "limit") == 0 || strcmp(tok, "category") == 0 ||
                       strcmp(tok, "from") == 0 || strcmp(tok, "to") == 0 ||
                       strcmp(tok, "user") == 0;
        cJSON_AddStringToObject(s, "type", integer ? "integer" : "string");
        cJSON_AddItemToArray(params, p);
    }
}

static cJSON *
ref(const char *name)
{
    char buf[96];
    snprintf(buf, sizeof(buf), "#/components/schemas/%s", name);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "$ref", buf);
    return o;
}

static cJSON *
json_content(const char *type, const char *schema)
{
    cJSON *content = cJSON_CreateObject();
    cJSON *media = cJSON_AddObjectToObject(content, type);
    cJSON_AddItemToObject(media, "schema", ref(schema));
    return content;
}

static cJSON *
operation(const struct api_route *r)
{
    cJSON *op = cJSON_CreateObject();
    char opid[128];
    snprintf(opid, sizeof(opid), "%s %s", r->method, r->path);
    cJSON_AddStringToObject(op, "operationId", opid);
    cJSON_AddStringToObject(op, "summary", r->summary);
    cJSON_AddItemToObject(op, "tags", cJSON_CreateStringArray(&r->tag, 1));
    if (r->access == API_PUBLIC) {
        cJSON_AddItemToObject(op, "security", cJSON_CreateArray());
    } else if (r->access == API_ADMIN) {
        cJSON_AddStringToObject(op, "x-chanced-role", "admin");
    }
    cJSON *params = cJSON_AddArrayToObject(op, "parameters");
    const char *brace = strchr(r->path, '{');
    if (brace) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "name", "id");
        cJSON_AddStringToObject(p, "in", "path");
        cJSON_AddBoolToObject(p, "required", true);
        cJSON *s = cJSON_AddObjectToObject(p, "schema");
        cJSON_AddStringToObject(s, "type", "string");
        cJSON_AddItemToArray(params, p);
    }
    if (r->query) {
        add_query_params(params, r->query);
    }
    if (r->body) {
        cJSON *rb = cJSON_AddObjectToObject(op, "requestBody");
        cJSON_AddBoolToObject(rb, "required", true);
        cJSON_AddItemToObject(rb, "content", json_content("application/json", r->body));
    }
    cJSON *responses = cJSON_AddObjectToObject(op, "responses");
    char code[8];
    snprintf(code, sizeof(code), "%d", r->status);
    cJSON *ok = cJSON_AddObjectToObject(responses, code);
    cJSON_AddStringToObject(ok, "description", http_status_text(r->status));
    if (r->reply) {
        cJSON_AddItemToObject(ok, "content", json_content("application/json", r->reply));
    }
    if (strcmp(r->path, "/api/v1/claims") == 0 && strcmp(r->method, "POST") == 0) {
        cJSON *p = cJSON_AddObjectToObject(responses, "202");
        cJSON_AddStringToObject(p, "description", "Accepted: outcome pending");
        cJSON_AddItemToObject(p, "content", json_content("application/json", "Claim"));
    }
    char errs[128];
    snprintf(errs, sizeof(errs), "%s", r->errors);
    for (char *save = NULL, *tok = strtok_r(errs, " ", &save); tok;
         tok = strtok_r(NULL, " ", &save)) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "description", http_status_text(atoi(tok)));
        cJSON_AddItemToObject(e, "content", json_content("application/problem+json", "Problem"));
        cJSON_AddItemToObject(responses, tok, e);
    }
    return op;
}

char *
openapi_build(const char *version)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "openapi", "3.1.0");
    cJSON *info = cJSON_AddObjectToObject(doc, "info");
    cJSON_AddStringToObject(info, "title", "chanced gateway");
    cJSON_AddStringToObject(info, "version", version);
    cJSON_AddStringToObject(info, "description",
                            "Chance codes, wallets and claims. Money is integer Toman; times are "
                            "epoch milliseconds; errors are RFC 9457 problem+json with a stable "
                            "`code`; lists use cursor pagination (`next_cursor`).");
    cJSON *paths = cJSON_AddObjectToObject(doc, "paths");
    for (size_t i = 0; i < api_nroutes; i++) {
        const struct api_route *r = &api_routes[i];
        cJSON *item = cJSON_GetObjectItemCaseSensitive(paths, r->path);
        if (item == NULL) {
            item = cJSON_AddObjectToObject(paths, r->path);
        }
        char method[16];
        size_t n = 0;
        for (; r->method[n] && n + 1 < sizeof(method); n++) {
            method[n] = (char)(r->method[n] | 0x20);
        }
        method[n] = '\0';
        cJSON_AddItemToObject(item, method, operation(r));
    }
    cJSON *components = cJSON_AddObjectToObject(doc, "components");
    cJSON *parsed = cJSON_Parse(schemas);
    if (parsed == NULL) {
        abort(); /* a typo in the text above: caught by the first test run */
    }
    cJSON_AddItemToObject(components, "schemas", parsed);
    cJSON *sec = cJSON_AddObjectToObject(components, "securitySchemes");
    cJSON *bearer = cJSON_AddObjectToObject(sec, "bearer");
    cJSON_AddStringToObject(bearer, "type", "http");
    cJSON_AddStringToObject(bearer, "scheme", "bearer");
    cJSON *cookie = cJSON_AddObjectToObject(sec, "cookie");
    cJSON_AddStringToObject(cookie, "type", "apiKey");
    cJSON_AddStringToObject(cookie, "in", "cookie");
    cJSON_AddStringToObject(cookie, "name", AUTH_COOKIE);
    cJSON *security = cJSON_AddArrayToObject(doc, "security");
    cJSON *s1 = cJSON_CreateObject();
    cJSON_AddItemToObject(s1, "bearer", cJSON_CreateArray());
    cJSON *s2 = cJSON_CreateObject();
    cJSON_AddItemToObject(s2, "cookie", cJSON_CreateArray());
    cJSON_AddItemToArray(security, s1);
    cJSON_AddItemToArray(security, s2);
    char *text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    return text;
}
