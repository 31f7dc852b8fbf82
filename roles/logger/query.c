/* Parsing of log.query / log.stats requests and the checked pagination cursors. */
#include "query.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "json.h"

#define TS_MAX 32503680000000LL /* matches the event check: 3000-01-01 */
#define CURSOR_VERSION 1

static const char *const query_fields[] = {"from", "to", "service", "type",  "user", "category",
                                           "code", "q",  "cursor",  "limit", NULL};
static const char *const stats_fields[] = {"from", "to", "bucket", "type", NULL};

/* FNV-1a, 64 bits: a cheap integrity check, not a MAC (see query.h on what cursors protect). */
static uint64_t
fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static uint64_t
fnv_str(uint64_t h, const char *s)
{
    return fnv1a(h, s, strlen(s) + 1); /* the NUL separates fields */
}

static int
copy_string(const cJSON *data, const char *key, size_t max, char *out, char *err, size_t errlen)
{
    const char *v = NULL;
    if (json_get_string(data, key, false, max, &v, err, errlen) != 0) {
        return -1;
    }
    snprintf(out, max + 1, "%s", v ? v : "");
    return 0;
}

static int
parse_range(const cJSON *data, bool required, long long *from, long long *to, bool *has_from,
            bool *has_to, char *err, size_t errlen)
{
    long long f = -1, t = -1;
    if (json_get_int(data, "from", required, 0, TS_MAX, &f, err, errlen) != 0 ||
        json_get_int(data, "to", required, 0, TS_MAX, &t, err, errlen) != 0) {
        return -1;
    }
    if (f >= 0 && t >= 0 && f > t) {
        snprintf(err, errlen, "field 'from' must not be after 'to' (inverted time range)");
        return -1;
    }
    *has_from = f >= 0;
    *has_to = t >= 0;
    *from = f;
    *to = t;
    return 0;
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

static uint64_t
cursor_check(const struct logger_query *q, long long ts, const char *id)
{
    uint64_t h = fnv1a(q->fingerprint, &ts, sizeof(ts));
    return fnv_str(h, id);
}

/* Cursor text: lowercase hex of [version][ts, 8 bytes BE][check, 8 bytes BE][id bytes]. */
static int
parse_cursor(struct logger_query *q, const char *s, char *err, size_t errlen)
{
    unsigned char raw[1 + 8 + 8 + LOGGER_EVENT_ID_MAX];
    size_t n = strlen(s), len = n / 2;
    if (n % 2 != 0 || len < 1 + 8 + 8 + 1 || len > sizeof(raw)) {
        goto bad;
    }
    for (size_t i = 0; i < len; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            goto bad;
        }
        raw[i] = (unsigned char)(hi << 4 | lo);
    }
    uint64_t ts = 0, check = 0;
    for (int i = 0; i < 8; i++) {
        ts = ts << 8 | raw[1 + i];
        check = check << 8 | raw[9 + i];
    }
    size_t idlen = len - 17;
    memcpy(q->cursor_id, raw + 17, idlen);
    q->cursor_id[idlen] = '\0';
    if (raw[0] != CURSOR_VERSION || ts > (uint64_t)TS_MAX || strlen(q->cursor_id) != idlen ||
        cursor_check(q, (long long)ts, q->cursor_id) != check) {
        goto bad;
    }
    q->cursor_ts = (long long)ts;
    q->has_cursor = true;
    return 0;
bad:
    snprintf(err, errlen, "field 'cursor' is not a cursor this query returned");
    return -1;
}

char *
logger_query_cursor(const struct logger_query *q, long long ts, const char *id)
{
    size_t idlen = strlen(id);
    unsigned char raw[1 + 8 + 8 + LOGGER_EVENT_ID_MAX];
    if (idlen > LOGGER_EVENT_ID_MAX) {
        idlen = LOGGER_EVENT_ID_MAX; /* stored ids passed the same bound; never happens */
    }
    uint64_t check = cursor_check(q, ts, id);
    raw[0] = CURSOR_VERSION;
    for (int i = 0; i < 8; i++) {
        raw[1 + i] = (unsigned char)((uint64_t)ts >> (56 - 8 * i));
        raw[9 + i] = (unsigned char)(check >> (56 - 8 * i));
    }
    memcpy(raw + 17, id, idlen);
    size_t len = 17 + idlen;
    char *out = xmalloc(2 * len + 1);
    for (size_t i = 0; i < len; i++) {
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    }
    return out;
}

static uint64_t
fingerprint(const struct logger_query *q)
{
    uint64_t h = 14695981039346656037ULL;
    long long nums[] = {q->has_from ? q->from : -1, q->has_to ? q->to : -1,
                        q->has_category ? q->category : -1};
    h = fnv1a(h, nums, sizeof(nums));
    h = fnv_str(h, q->service);
    h = fnv_str(h, q->type);
    h = fnv_str(h, q->user);
    h = fnv_str(h, q->code);
    return fnv_str(h, q->text);
}

int
logger_query_parse(const cJSON *data, struct logger_query *q, char *err, size_t errlen)
{
    const char *cursor = NULL;
    long long limit = LOGGER_QUERY_LIMIT_DEFAULT, category = -1;
    memset(q, 0, sizeof(*q));
    if (json_check_fields(data, query_fields, err, errlen) != 0 ||
        parse_range(data, false, &q->from, &q->to, &q->has_from, &q->has_to, err, errlen) != 0 ||
        copy_string(data, "service", 64, q->service, err, errlen) != 0 ||
        copy_string(data, "type", 64, q->type, err, errlen) != 0 ||
        copy_string(data, "user", 64, q->user, err, errlen) != 0 ||
        copy_string(data, "code", 64, q->code, err, errlen) != 0 ||
        copy_string(data, "q", LOGGER_QUERY_TEXT_MAX, q->text, err, errlen) != 0 ||
        json_get_int(data, "category", false, 1, JSON_MAX_SAFE_INT, &category, err, errlen) != 0 ||
        json_get_int(data, "limit", false, 1, LOGGER_QUERY_LIMIT_MAX, &limit, err, errlen) != 0 ||
        json_get_string(data, "cursor", false, 2 * (17 + LOGGER_EVENT_ID_MAX), &cursor, err,
                        errlen) != 0) {
        return -1;
    }
    for (char *p = q->code; *p; p++) {
        *p = (char)toupper((unsigned char)*p);
    }
    q->has_category = category >= 1;
    q->category = category;
    q->limit = (int)limit;
    q->fingerprint = fingerprint(q);
    if (cursor != NULL && parse_cursor(q, cursor, err, errlen) != 0) {
        return -1;
    }
    return 0;
}

int
logger_stats_parse(const cJSON *data, struct logger_stats_req *s, char *err, size_t errlen)
{
    const char *bucket = "day";
    bool has_from, has_to;
    memset(s, 0, sizeof(*s));
    if (json_check_fields(data, stats_fields, err, errlen) != 0 ||
        parse_range(data, true, &s->from, &s->to, &has_from, &has_to, err, errlen) != 0 ||
        json_get_string(data, "bucket", false, 8, &bucket, err, errlen) != 0 ||
        copy_string(data, "type", 64, s->type, err, errlen) != 0) {
        return -1;
    }
    if (strcmp(bucket, "hour") == 0) {
        s->bucket_ms = 3600000;
    } else if (strcmp(bucket, "day") == 0) {
        s->bucket_ms = 86400000;
    } else {
        snprintf(err, errlen, "field 'bucket' must be \"hour\" or \"day\"");
        return -1;
    }
    if ((s->to - s->from) / s->bucket_ms >= LOGGER_STATS_BUCKETS_MAX) {
        snprintf(err, errlen, "the range spans more than %d %ss; narrow it or use a larger bucket",
                 LOGGER_STATS_BUCKETS_MAX, bucket);
        return -1;
    }
    return 0;
}
