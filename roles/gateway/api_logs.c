/* Audit reports for admins, through the logger: log.query, a streamed CSV export, log.stats. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "gw.h"
#include "json.h"
#include "log.h"
#include "rpc_client.h"

#define CSV_PAGE 1000              /* events per log.query while exporting */
#define CSV_MAX_ROWS 1000000       /* an export stops here; narrow the range for more */
#define TIME_MAX 253402300799999LL /* 9999-12-31, in ms */

/* Builds log.query/log.stats data from the query string; NULL after answering 400. */
static cJSON *
filters(struct api_call *call, const struct urlquery *q, bool paged)
{
    static const char *const strings[] = {"service", "type",   "user",  "code",
                                          "q",       "cursor", "bucket"};
    static const char *const ints[] = {"from", "to", "category", "limit"};
    cJSON *data = cJSON_CreateObject();
    for (size_t i = 0; i < ARRAY_SIZE(ints); i++) {
        long long v;
        long long max = strcmp(ints[i], "limit") == 0 ? 1000 : TIME_MAX;
        if (api_query_int(call, q, ints[i], strcmp(ints[i], "limit") == 0 ? 1 : 0, max, -1, &v) !=
            0) {
            cJSON_Delete(data);
            return NULL;
        }
        if (v >= 0) {
            cJSON_AddNumberToObject(data, ints[i], (double)v);
        }
    }
    for (size_t i = 0; i < ARRAY_SIZE(strings); i++) {
        const char *v = urlquery_get(q, strings[i]);
        /* The logger's cursors carry an event id in hex: allow them more room. */
        size_t max = strcmp(strings[i], "cursor") == 0 ? 1024 : 200;
        if (v && (strlen(v) == 0 || strlen(v) > max)) {
            char err[96];
            snprintf(err, sizeof(err), "query parameter '%s' must be 1 to %zu bytes", strings[i],
                     max);
            http_problem(call->req, 400, "bad_query", err, NULL);
            cJSON_Delete(data);
            return NULL;
        }
        if (v) {
            cJSON_AddStringToObject(data, strings[i], v);
        }
    }
    if (!paged) {
        cJSON_AddNumberToObject(data, "limit", CSV_PAGE);
    }
    return data;
}

static void
logger_passthrough(struct api_call *call, const char *cmd)
{
    struct urlquery q;
    if (api_query(call, &q) != 0) {
        return;
    }
    cJSON *data = filters(call, &q, true);
    urlquery_cleanup(&q);
    if (data == NULL) {
        return;
    }
    cJSON *result = NULL;
    int st = rpc_client_call_sync(call->gw->logger, cmd, data,
                                  (int)call->gw->conf->logger_timeout_ms, &result, NULL, NULL);
    if (st == RPC_OK && cJSON_IsObject(result)) {
        api_reply(call, 200, result, NULL);
        return;
    }
    if (st == RPC_OK) {
        http_problem(call->req, 502, "upstream_error", "the logger sent a malformed answer", NULL);
    } else {
        api_rpc_problem(call, "logger", st, result, NULL);
    }
    cJSON_Delete(result);
}

void
api_logs_query(struct api_call *call)
{
    logger_passthrough(call, "log.query");
}

void
api_logs_stats(struct api_call *call)
{
    logger_passthrough(call, "log.stats");
}

/* Appends one CSV cell: quoted when needed, and defused if a spreadsheet would run it. */
static void
csv_cell(struct sbuf *b, const char *s, bool last)
{
    bool formula =
        s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@' || s[0] == '\t' || s[0] == '\r';
    bool quote = formula || strpbrk(s, ",\"\r\n") != NULL || s[0] == ' ';
    if (quote) {
        sbuf_appends(b, "\"");
    }
    if (formula) {
        sbuf_appends(b, "'");
    }
    for (const char *p = s; *p; p++) {
        sbuf_append(b, p, 1);
        if (*p == '"') {
            sbuf_appends(b, "\"");
        }
    }
    sbuf_appends(b, quote ? "\"" : "");
    sbuf_appends(b, last ? "\r\n" : ",");
}

static const char *
str_at(const cJSON *obj, const char *a, const char *b, char *buf, size_t size)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, a);
    if (b) {
        v = cJSON_GetObjectItemCaseSensitive(v, b);
    }
    if (cJSON_IsString(v)) {
        return v->valuestring;
    }
    if (cJSON_IsNumber(v)) {
        snprintf(buf, size, "%.0f", v->valuedouble);
        return buf;
    }
    return "";
}

static void
csv_row(struct sbuf *b, const cJSON *ev)
{
    static const char *const cols[][2] = {
        {"_id", NULL},           {"ts", NULL},
        {"service", NULL},       {"type", NULL},
        {"actor", "id"},         {"actor", "username"},
        {"actor", "role"},       {"subject", "category"},
        {"subject", "code"},     {"subject", "user_id"},
        {"subject", "username"}, {"subject", "claim_id"},
        {"data", "reward"},      {"message", NULL},
    };
    char buf[64], iso[40];
    for (size_t i = 0; i < ARRAY_SIZE(cols); i++) {
        const char *v = str_at(ev, cols[i][0], cols[i][1], buf, sizeof(buf));
        if (i == 1) {
            const cJSON *ts = cJSON_GetObjectItemCaseSensitive(ev, "ts");
            csv_cell(b, v, false);
            time_format_iso(json_is_int(ts) ? (int64_t)ts->valuedouble : 0, iso, sizeof(iso));
            csv_cell(b, iso, false);
            continue;
        }
        csv_cell(b, v, i + 1 == ARRAY_SIZE(cols));
    }
}

static int
fetch_page(struct api_call *call, cJSON *base, const char *cursor, cJSON **result)
{
    cJSON *data = cJSON_Duplicate(base, 1);
    if (cursor) {
        cJSON_ReplaceItemInObjectCaseSensitive(data, "cursor", cJSON_CreateString(cursor));
        if (!cJSON_HasObjectItem(data, "cursor")) {
            cJSON_AddStringToObject(data, "cursor", cursor);
        }
    }
    *result = NULL;
    return rpc_client_call_sync(call->gw->logger, "log.query", data,
                                (int)call->gw->conf->logger_timeout_ms, result, NULL, NULL);
}

void
api_logs_csv(struct api_call *call)
{
    struct urlquery q;
    if (api_query(call, &q) != 0) {
        return;
    }
    cJSON *base = filters(call, &q, false);
    urlquery_cleanup(&q);
    if (base == NULL) {
        return;
    }
    cJSON *page = NULL;
    int st = fetch_page(call, base, NULL, &page);
    if (st != RPC_OK || !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(page, "items"))) {
        api_rpc_problem(call, "logger", st == RPC_OK ? RPC_ERROR : st, page, NULL);
        cJSON_Delete(page);
        cJSON_Delete(base);
        return;
    }
    http_stream_begin(call->req, 200, "text/csv; charset=utf-8",
                      "Content-Disposition: attachment; filename=\"audit.csv\"\r\n");
    struct sbuf b = {0};
    sbuf_appends(&b, "id,ts,time,service,type,actor_id,actor_username,actor_role,category,code,"
                     "user_id,username,claim_id,reward,message\r\n");
    long rows = 0;
    bool ok = true;
    while (page && ok) {
        const cJSON *ev;
        cJSON_ArrayForEach (ev, cJSON_GetObjectItemCaseSensitive(page, "items")) {
            csv_row(&b, ev);
            rows++;
        }
        ok = http_stream_write(call->req, b.data ? b.data : "", b.len) == 0;
        sbuf_cleanup(&b);
        const cJSON *next = cJSON_GetObjectItemCaseSensitive(page, "next_cursor");
        if (!ok || !cJSON_IsString(next) || rows >= CSV_MAX_ROWS) {
            break;
        }
        char *cursor = xstrdup(next->valuestring);
        cJSON_Delete(page);
        page = NULL;
        st = fetch_page(call, base, cursor, &page);
        free(cursor);
        if (st != RPC_OK || !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(page, "items"))) {
            /* Mid-stream there is no status to change: leave the body unterminated. */
            log_warn("csv_export_aborted", "rows=%ld status=%s", rows, rpc_client_status_name(st));
            ok = false;
        }
    }
    if (ok) {
        http_stream_end(call->req);
    }
    sbuf_cleanup(&b);
    cJSON_Delete(page);
    cJSON_Delete(base);
}
