/*
 * libFuzzer target for the logger's report requests (roles/logger/query.h): the input as a
 * log.query and a log.stats request, and as a bare cursor string. Parsed requests must be within
 * their bounds; a cursor made for a parsed query must come back through the same query, and be
 * refused by a changed query or when mangled; an accepted cursor is the one cursor of its position.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "query.h"

#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_logquery.c:%d: %s\n", __LINE__, #cond);                          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define TS_MAX 32503680000000LL /* query.c's bound, 3000-01-01 */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool
text_ok(const char *s, size_t max, bool upper)
{
    size_t n = strlen(s);
    for (const char *p = s; upper && *p; p++) {
        if (*p >= 'a' && *p <= 'z') {
            return false;
        }
    }
    return n <= max && util_utf8_valid(s, n);
}

static void
check_bounds(const struct logger_query *q)
{
    FUZZ_ASSERT(q->limit >= 1 && q->limit <= LOGGER_QUERY_LIMIT_MAX);
    FUZZ_ASSERT(!q->has_from || (q->from >= 0 && q->from <= TS_MAX));
    FUZZ_ASSERT(!q->has_to || (q->to >= 0 && q->to <= TS_MAX));
    FUZZ_ASSERT(!(q->has_from && q->has_to) || q->from <= q->to);
    FUZZ_ASSERT(!q->has_category || (q->category >= 1 && q->category <= JSON_MAX_SAFE_INT));
    FUZZ_ASSERT(text_ok(q->service, 64, false) && text_ok(q->type, 64, false));
    FUZZ_ASSERT(text_ok(q->user, 64, false) && text_ok(q->code, 64, true));
    FUZZ_ASSERT(text_ok(q->text, LOGGER_QUERY_TEXT_MAX, false));
    FUZZ_ASSERT(!q->has_cursor ||
                (q->cursor_ts >= 0 && q->cursor_ts <= TS_MAX && strlen(q->cursor_id) >= 1 &&
                 strlen(q->cursor_id) <= LOGGER_EVENT_ID_MAX));
}

/* Removes every key of that name (the request may repeat one). */
static void
delete_all(cJSON *obj, const char *key)
{
    while (cJSON_GetObjectItemCaseSensitive(obj, key) != NULL) {
        cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
    }
}

/* rc of parsing req with its "cursor" set to cursor (req is left as it was). */
static int
parse_with(cJSON *req, const char *cursor, struct logger_query *out)
{
    char err[128];
    cJSON *copy = cJSON_Duplicate(req, true);
    delete_all(copy, "cursor");
    cJSON_AddStringToObject(copy, "cursor", cursor);
    int rc = logger_query_parse(copy, out, err, sizeof(err));
    cJSON_Delete(copy);
    return rc;
}

static void
check_query(cJSON *req, const uint8_t *data, size_t size)
{
    struct logger_query q;
    char err[128];
    memset(err, '#', sizeof(err));
    if (logger_query_parse(req, &q, err, sizeof(err)) != 0) {
        FUZZ_ASSERT(memchr(err, '\0', sizeof(err)) != NULL && err[0] != '\0');
        return;
    }
    check_bounds(&q);
    if (q.has_cursor) { /* the cursor it took is the one this position has */
        char *again = logger_query_cursor(&q, q.cursor_ts, q.cursor_id);
        const cJSON *given = cJSON_GetObjectItemCaseSensitive(req, "cursor");
        FUZZ_ASSERT(strcmp(again, given->valuestring) == 0);
        free(again);
    }

    /* A position taken from the input: ts anywhere in range, id of its bytes (no NUL). */
    uint64_t h = 1469598103934665603ULL;
    char id[LOGGER_EVENT_ID_MAX + 1];
    size_t n = 0;
    for (size_t i = 0; i < size; i++) {
        h = (h ^ data[i]) * 1099511628211ULL;
        if (data[i] != 0 && n < LOGGER_EVENT_ID_MAX) {
            id[n++] = (char)data[i];
        }
    }
    if (n == 0) {
        id[n++] = 'e';
    }
    id[n] = '\0';
    long long ts = (long long)(h % (uint64_t)(TS_MAX + 1));

    char *c = logger_query_cursor(&q, ts, id);
    struct logger_query back;
    FUZZ_ASSERT(parse_with(req, c, &back) == 0);
    FUZZ_ASSERT(back.has_cursor && back.cursor_ts == ts && strcmp(back.cursor_id, id) == 0);
    FUZZ_ASSERT(back.fingerprint == q.fingerprint && back.limit == q.limit);

    /* Refused when a filter changes: the text filter, added or removed. */
    cJSON *other = cJSON_Duplicate(req, true);
    delete_all(other, "q");
    if (*q.text == '\0') {
        cJSON_AddStringToObject(other, "q", "x");
    }
    FUZZ_ASSERT(parse_with(other, c, &back) == -1);
    cJSON_Delete(other);

    /* Refused when any one digit changes. */
    size_t at = h % strlen(c);
    c[at] = c[at] == 'f' ? '0' : c[at] == '9' ? 'a' : (char)(c[at] + 1);
    FUZZ_ASSERT(parse_with(req, c, &back) == -1);
    free(c);
}

static void
check_stats(const cJSON *req)
{
    struct logger_stats_req s;
    char err[128];
    memset(err, '#', sizeof(err));
    if (logger_stats_parse(req, &s, err, sizeof(err)) != 0) {
        FUZZ_ASSERT(memchr(err, '\0', sizeof(err)) != NULL && err[0] != '\0');
        return;
    }
    FUZZ_ASSERT(s.from >= 0 && s.from <= s.to && s.to <= TS_MAX);
    FUZZ_ASSERT(s.bucket_ms == 3600000 || s.bucket_ms == 86400000);
    FUZZ_ASSERT((s.to - s.from) / s.bucket_ms < LOGGER_STATS_BUCKETS_MAX);
    FUZZ_ASSERT(text_ok(s.type, 64, false));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON *req = cJSON_ParseWithLength((const char *)data, size);
    if (req != NULL) {
        check_stats(req);
        if (cJSON_IsObject(req)) {
            check_query(req, data, size);
        }
        cJSON_Delete(req);
    }

    /* The input as a cursor for an empty query and for one with filters. */
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    static const char *const queries[] = {"{}", "{\"service\":\"chance\",\"from\":10}"};
    for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
        cJSON *r = cJSON_Parse(queries[i]);
        cJSON_AddStringToObject(r, "cursor", s);
        struct logger_query q;
        char err[128];
        if (logger_query_parse(r, &q, err, sizeof(err)) == 0) {
            check_bounds(&q);
            char *again = logger_query_cursor(&q, q.cursor_ts, q.cursor_id);
            FUZZ_ASSERT(strcmp(again, s) == 0);
            free(again);
        }
        cJSON_Delete(r);
    }
    free(s);
    return 0;
}
