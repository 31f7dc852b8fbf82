/*
 * Unit tests of the logger's report requests (query.h): log.query and log.stats parsing, limits
 * and ranges, and the checked pagination cursors (round trip, reuse, mangling, truncation).
 */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "json.h"
#include "query.h"

#define TS_MAX 32503680000000LL /* 3000-01-01, as query.c */
#define NOT_OURS "'cursor' is not a cursor this query returned"

/* Parses a log.query request given as text; rc of logger_query_parse. */
static int
parse_query(const char *text, struct logger_query *q, char *err, size_t errlen)
{
    cJSON *j = cJSON_Parse(text);
    CHECK(j != NULL, "test input does not parse: %.80s", text);
    err[0] = '\0';
    int rc = logger_query_parse(j, q, err, errlen);
    cJSON_Delete(j);
    return rc;
}

/* The request text with "cursor" added (filters is an object's text; free()). */
static char *
with_cursor(const char *filters, const char *cursor)
{
    cJSON *j = cJSON_Parse(filters);
    CHECK(j != NULL, "filters do not parse: %s", filters);
    cJSON_AddStringToObject(j, "cursor", cursor);
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return text;
}

/* rc of parsing filters plus cursor; on success *out holds the parse. */
static int
parse_with_cursor(const char *filters, const char *cursor, struct logger_query *out, char *err)
{
    char *text = with_cursor(filters, cursor);
    int rc = parse_query(text, out, err, 256);
    free(text);
    return rc;
}

static void
test_query_defaults(void)
{
    struct logger_query q;
    char err[256];
    memset(&q, 0x5a, sizeof(q));
    CHECK(parse_query("{}", &q, err, sizeof(err)) == 0, "{} refused: %s", err);
    CHECK(!q.has_from && !q.has_to && !q.has_category && !q.has_cursor, "flags set");
    CHECK(q.limit == LOGGER_QUERY_LIMIT_DEFAULT, "limit %d", q.limit);
    CHECK(!*q.service && !*q.type && !*q.user && !*q.code && !*q.text, "filters set");
    /* null is absent */
    CHECK(parse_query("{\"from\":null,\"service\":null,\"limit\":null,\"cursor\":null}", &q, err,
                      sizeof(err)) == 0,
          "nulls refused: %s", err);
    CHECK(!q.has_from && !*q.service && q.limit == 50 && !q.has_cursor, "nulls set something");
}

static void
test_query_fields(void)
{
    struct logger_query q;
    char err[256];
    CHECK(
        parse_query("{\"from\":1000,\"to\":2000,\"service\":\"chance\",\"type\":\"code.assigned\","
                    "\"user\":\"alice\",\"category\":42,\"code\":\"abc-d\\u00e9f\","
                    "\"q\":\"Hello World\",\"limit\":7}",
                    &q, err, sizeof(err)) == 0,
        "full query refused: %s", err);
    CHECK(q.has_from && q.from == 1000 && q.has_to && q.to == 2000, "range");
    CHECK(strcmp(q.service, "chance") == 0 && strcmp(q.type, "code.assigned") == 0, "names");
    CHECK(strcmp(q.user, "alice") == 0, "user '%s'", q.user);
    CHECK(q.has_category && q.category == 42, "category");
    CHECK(strcmp(q.code, "ABC-D\xc3\xa9"
                         "F") == 0,
          "code '%s' (upper-cased in ASCII only)", q.code);
    CHECK(strcmp(q.text, "Hello World") == 0, "q '%s' (kept as given)", q.text);
    CHECK(q.limit == 7 && !q.has_cursor, "limit %d", q.limit);

    /* One bound alone; equal bounds; the extremes. */
    CHECK(parse_query("{\"from\":5}", &q, err, sizeof(err)) == 0 && q.has_from && !q.has_to,
          "from alone");
    CHECK(parse_query("{\"to\":5}", &q, err, sizeof(err)) == 0 && !q.has_from && q.has_to,
          "to alone");
    CHECK(parse_query("{\"from\":5,\"to\":5}", &q, err, sizeof(err)) == 0, "from == to");
    CHECK(parse_query("{\"from\":0,\"to\":32503680000000}", &q, err, sizeof(err)) == 0 &&
              q.from == 0 && q.to == TS_MAX,
          "0..TS_MAX: %s", err);
    CHECK(parse_query("{\"limit\":1}", &q, err, sizeof(err)) == 0 && q.limit == 1, "limit 1");
    CHECK(parse_query("{\"limit\":1000}", &q, err, sizeof(err)) == 0 && q.limit == 1000,
          "limit 1000");
    CHECK(parse_query("{\"category\":9007199254740991}", &q, err, sizeof(err)) == 0 &&
              q.category == JSON_MAX_SAFE_INT,
          "category 2^53-1");

    /* 64-byte names and a 100-byte text pass whole. */
    char text[512], s64[65], s100[101];
    memset(s64, 's', 64);
    s64[64] = '\0';
    memset(s100, 't', 100);
    s100[100] = '\0';
    snprintf(text, sizeof(text),
             "{\"service\":\"%s\",\"type\":\"%s\",\"user\":\"%s\",\"code\":\"%s\",\"q\":\"%s\"}",
             s64, s64, s64, s64, s100);
    CHECK(parse_query(text, &q, err, sizeof(err)) == 0, "64/100 bytes refused: %s", err);
    CHECK(strlen(q.service) == 64 && strlen(q.type) == 64 && strlen(q.user) == 64 &&
              strlen(q.code) == 64 && strlen(q.text) == 100,
          "lengths");
}

static void
test_query_refuses(void)
{
    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"[]", "object"},
        {"\"q\"", "object"},
        {"{\"sort\":\"ts\"}", "'sort'"},
        {"{\"From\":1}", "'From'"},
        {"{\"from\":2,\"to\":1}", "inverted"},
        {"{\"from\":-1}", "'from'"},
        {"{\"to\":-1}", "'to'"},
        {"{\"from\":1.5}", "'from'"},
        {"{\"from\":\"1\"}", "'from'"},
        {"{\"to\":32503680000001}", "'to'"},
        {"{\"limit\":0}", "'limit'"},
        {"{\"limit\":1001}", "'limit'"},
        {"{\"limit\":-5}", "'limit'"},
        {"{\"limit\":2.5}", "'limit'"},
        {"{\"limit\":\"10\"}", "'limit'"},
        {"{\"category\":0}", "'category'"},
        {"{\"category\":9007199254740992}", "'category'"},
        {"{\"category\":\"3\"}", "'category'"},
        {"{\"service\":\"\"}", "'service'"},
        {"{\"service\":1}", "'service'"},
        {"{\"type\":[]}", "'type'"},
        {"{\"user\":true}", "'user'"},
        {"{\"code\":\"\"}", "'code'"},
        {"{\"q\":\"\"}", "'q'"},
        {"{\"cursor\":\"\"}", "'cursor'"},
        {"{\"cursor\":12}", "'cursor'"},
        {"{\"cursor\":\"00\"}", NOT_OURS},
        {"{\"cursor\":\"not a cursor\"}", NOT_OURS},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct logger_query q;
        char err[256];
        CHECK(parse_query(bad[i].text, &q, err, sizeof(err)) == -1, "%s accepted", bad[i].text);
        CHECK(strstr(err, bad[i].msg) != NULL, "%s: err '%s' lacks \"%s\"", bad[i].text, err,
              bad[i].msg);
    }
    /* One byte over each string bound. */
    static const struct {
        const char *key;
        size_t len;
    } over[] = {{"service", 65}, {"type", 65}, {"user", 65}, {"code", 65}, {"q", 101}};
    for (size_t i = 0; i < ARRAY_SIZE(over); i++) {
        char text[256], v[128];
        memset(v, 'v', over[i].len);
        v[over[i].len] = '\0';
        snprintf(text, sizeof(text), "{\"%s\":\"%s\"}", over[i].key, v);
        struct logger_query q;
        char err[256];
        CHECK(parse_query(text, &q, err, sizeof(err)) == -1, "%s of %zu bytes accepted",
              over[i].key, over[i].len);
    }
}

static const char *const filter_sets[] = {
    "{}",
    "{\"from\":1000,\"to\":2000}",
    "{\"service\":\"chance\",\"type\":\"code.assigned\",\"user\":\"alice\",\"category\":3,"
    "\"code\":\"ABC\",\"q\":\"assigned\"}",
    "{\"to\":32503680000000,\"q\":\"\\u00e9t\\u00e9\"}",
};

static void
test_cursor_round_trip(void)
{
    char id200[201];
    memset(id200, 'z', 200);
    id200[200] = '\0';
    static const long long stamps[] = {0, 1, 1714567890123LL, TS_MAX};
    const char *ids[] = {"e", "code.assigned:9f2c:c42:17", "gw:prod:\"1042\"\\",
                         "\xc3\xa9t\xc3\xa9", id200};
    for (size_t f = 0; f < ARRAY_SIZE(filter_sets); f++) {
        struct logger_query q, back;
        char err[256];
        CHECK(parse_query(filter_sets[f], &q, err, sizeof(err)) == 0, "filters %zu: %s", f, err);
        for (size_t s = 0; s < ARRAY_SIZE(stamps); s++) {
            for (size_t i = 0; i < ARRAY_SIZE(ids); i++) {
                char *c = logger_query_cursor(&q, stamps[s], ids[i]);
                /* Lowercase hex of 1 + 8 + 8 bytes and the id. */
                CHECK(strlen(c) == 2 * (17 + strlen(ids[i])), "cursor length %zu", strlen(c));
                CHECK(strspn(c, "0123456789abcdef") == strlen(c), "cursor '%s'", c);
                int rc = parse_with_cursor(filter_sets[f], c, &back, err);
                CHECK(rc == 0, "filters %zu, ts %lld, id '%s': refused: %s", f, stamps[s], ids[i],
                      err);
                if (rc == 0) {
                    CHECK(back.has_cursor && back.cursor_ts == stamps[s] &&
                              strcmp(back.cursor_id, ids[i]) == 0,
                          "filters %zu: back (%lld, '%s')", f, back.cursor_ts, back.cursor_id);
                    CHECK(back.fingerprint == q.fingerprint, "fingerprint changed");
                }
                free(c);
            }
        }
    }
    /* Distinct positions give distinct cursors. */
    struct logger_query q;
    char err[256];
    CHECK(parse_query("{}", &q, err, sizeof(err)) == 0, "{}");
    char *a = logger_query_cursor(&q, 5, "x"), *b = logger_query_cursor(&q, 6, "x"),
         *c = logger_query_cursor(&q, 5, "y");
    CHECK(strcmp(a, b) != 0 && strcmp(a, c) != 0 && strcmp(b, c) != 0, "cursors collide");
    free(a);
    free(b);
    free(c);
}

static void
test_cursor_reuse(void)
{
    /* A cursor from one query is refused by a query with any other filters. */
    static const char *const base = "{\"from\":1000,\"to\":2000,\"service\":\"chance\","
                                    "\"type\":\"t\",\"user\":\"u\",\"category\":3,\"code\":\"C\","
                                    "\"q\":\"x\"}";
    static const char *const others[] = {
        "{\"from\":1001,\"to\":2000,\"service\":\"chance\",\"type\":\"t\",\"user\":\"u\","
        "\"category\":3,\"code\":\"C\",\"q\":\"x\"}",
        "{\"from\":1000,\"to\":1999,\"service\":\"chance\",\"type\":\"t\",\"user\":\"u\","
        "\"category\":3,\"code\":\"C\",\"q\":\"x\"}",
        "{\"from\":1000,\"to\":2000,\"service\":\"gateway\",\"type\":\"t\",\"user\":\"u\","
        "\"category\":3,\"code\":\"C\",\"q\":\"x\"}",
        "{\"from\":1000,\"to\":2000,\"service\":\"chance\",\"type\":\"T\",\"user\":\"u\","
        "\"category\":3,\"code\":\"C\",\"q\":\"x\"}",
        "{\"from\":1000,\"to\":2000,\"service\":\"chance\",\"type\":\"t\",\"user\":\"v\","
        "\"category\":3,\"code\":\"C\",\"q\":\"x\"}",
        "{\"from\":1000,\"to\":2000,\"service\":\"chance\",\"type\":\"t\",\"user\":\"u\","
        "\"category\":4,\"code\":\"C\",\"q\":\"x\"}",
        "{\"from\":1000,\"to\":2000,\"service\":\"chance\",\"type\":\"t\",\"user\":\"u\","
        "\"category\":3,\"code\":\"D\",\"q\":\"x\"}",
        "{\"from\":1000,\"to\":2000,\"service\":\"chance\",\"type\":\"t\",\"user\":\"u\","
        "\"category\":3,\"code\":\"C\",\"q\":\"X\"}",
        "{\"to\":2000,\"service\":\"chance\",\"type\":\"t\",\"user\":\"u\","
        "\"category\":3,\"code\":\"C\",\"q\":\"x\"}",
        "{\"from\":1000,\"to\":2000,\"service\":\"chance\",\"type\":\"t\",\"user\":\"u\","
        "\"code\":\"C\",\"q\":\"x\"}",
        "{\"from\":1000,\"to\":2000,\"service\":\"chance\",\"type\":\"t\",\"user\":\"u\","
        "\"category\":3,\"code\":\"C\"}",
        "{}",
    };
    struct logger_query q, back;
    char err[256];
    CHECK(parse_query(base, &q, err, sizeof(err)) == 0, "base: %s", err);
    char *c = logger_query_cursor(&q, 1500, "e42");
    CHECK(parse_with_cursor(base, c, &back, err) == 0, "own cursor refused: %s", err);
    for (size_t i = 0; i < ARRAY_SIZE(others); i++) {
        CHECK(parse_with_cursor(others[i], c, &back, err) == -1, "other query %zu accepted", i);
        CHECK(strstr(err, NOT_OURS) != NULL, "other query %zu: err '%s'", i, err);
    }
    free(c);

    /* Field boundaries count: service "ab" + type "c" is not service "a" + type "bc". */
    CHECK(parse_query("{\"service\":\"ab\",\"type\":\"c\"}", &q, err, sizeof(err)) == 0, "ab/c");
    c = logger_query_cursor(&q, 1, "e");
    CHECK(parse_with_cursor("{\"service\":\"a\",\"type\":\"bc\"}", c, &back, err) == -1,
          "a/bc took ab/c's cursor");
    CHECK(parse_with_cursor("{\"type\":\"ab\",\"user\":\"c\"}", c, &back, err) == -1,
          "type/user took service/type's cursor");
    free(c);

    /* What is not a filter does not bind: the page size, the case of the code, key order. */
    CHECK(parse_query("{\"code\":\"abc\",\"limit\":10,\"from\":1}", &q, err, sizeof(err)) == 0,
          "abc");
    c = logger_query_cursor(&q, 7, "e");
    CHECK(parse_with_cursor("{\"from\":1,\"code\":\"ABC\",\"limit\":500}", c, &back, err) == 0,
          "cursor refused after a change of limit or code case: %s", err);
    CHECK(back.limit == 500, "limit %d", back.limit);
    free(c);
}

static void
test_cursor_mangled(void)
{
    struct logger_query q, back;
    char err[256];
    const char *filters = "{\"service\":\"chance\",\"from\":10}";
    CHECK(parse_query(filters, &q, err, sizeof(err)) == 0, "filters: %s", err);
    char *good = logger_query_cursor(&q, 1714567890123LL, "code.assigned:x:17");
    size_t n = strlen(good);
    char *m = malloc(n + 3);

    /* Any one hex digit changed, in the version, ts, check or id. */
    for (size_t i = 0; i < n; i++) {
        strcpy(m, good);
        m[i] = m[i] == '0' ? '1' : '0';
        CHECK(parse_with_cursor(filters, m, &back, err) == -1, "digit %zu changed: accepted", i);
        CHECK(strstr(err, NOT_OURS) != NULL, "digit %zu: err '%s'", i, err);
    }
    /* Every truncation, even or odd; one byte more. */
    for (size_t len = 0; len < n; len++) {
        memcpy(m, good, len);
        m[len] = '\0';
        CHECK(parse_with_cursor(filters, m, &back, err) == -1, "cut to %zu: accepted", len);
    }
    snprintf(m, n + 3, "%s00", good);
    CHECK(parse_with_cursor(filters, m, &back, err) == -1, "extended: accepted");
    snprintf(m, n + 3, "%s7a", good);
    CHECK(parse_with_cursor(filters, m, &back, err) == -1, "extended by 'z': accepted");
    /* Upper-case hex, and characters that are not hex. */
    strcpy(m, good);
    for (char *p = m; *p; p++) {
        *p = (char)(*p >= 'a' && *p <= 'f' ? *p - 32 : *p);
    }
    CHECK(strcmp(m, good) == 0 || parse_with_cursor(filters, m, &back, err) == -1,
          "upper-case hex accepted");
    strcpy(m, good);
    m[n - 1] = 'g';
    CHECK(parse_with_cursor(filters, m, &back, err) == -1, "'g' accepted");
    strcpy(m, good);
    m[0] = ' ';
    CHECK(parse_with_cursor(filters, m, &back, err) == -1, "' ' accepted");
    free(m);
    free(good);

    /* A position outside the stored range never yields a usable cursor. */
    long long stamps[] = {-1, TS_MAX + 1, (long long)9e18};
    for (size_t i = 0; i < ARRAY_SIZE(stamps); i++) {
        char *c = logger_query_cursor(&q, stamps[i], "e");
        CHECK(parse_with_cursor(filters, c, &back, err) == -1, "ts %lld accepted", stamps[i]);
        free(c);
    }
    /* Nor does an empty id, or one longer than an event _id may be. */
    char *c = logger_query_cursor(&q, 1, "");
    CHECK(parse_with_cursor(filters, c, &back, err) == -1, "empty id accepted");
    free(c);
    char id201[202];
    memset(id201, 'i', 201);
    id201[201] = '\0';
    c = logger_query_cursor(&q, 1, id201);
    CHECK(strlen(c) <= 2 * (17 + LOGGER_EVENT_ID_MAX), "cursor of a 201-byte id: %zu", strlen(c));
    CHECK(parse_with_cursor(filters, c, &back, err) == -1, "201-byte id accepted");
    free(c);

    /* A forged id with a NUL inside: the hex is well-formed, the id is not. */
    c = logger_query_cursor(&q, 1, "ab");
    size_t len = strlen(c);
    c[len - 2] = '0';
    c[len - 1] = '0';
    CHECK(parse_with_cursor(filters, c, &back, err) == -1, "id with a NUL accepted");
    free(c);
}

static int
parse_stats(const char *text, struct logger_stats_req *s, char *err)
{
    cJSON *j = cJSON_Parse(text);
    CHECK(j != NULL, "test input does not parse: %.80s", text);
    err[0] = '\0';
    int rc = logger_stats_parse(j, s, err, 256);
    cJSON_Delete(j);
    return rc;
}

static void
test_stats(void)
{
    struct logger_stats_req s;
    char err[256];
    CHECK(parse_stats("{\"from\":0,\"to\":86400000}", &s, err) == 0, "default bucket: %s", err);
    CHECK(s.from == 0 && s.to == 86400000 && s.bucket_ms == 86400000 && !*s.type, "day default");
    CHECK(parse_stats("{\"from\":5,\"to\":5,\"bucket\":\"hour\",\"type\":\"code.assigned\"}", &s,
                      err) == 0,
          "hour: %s", err);
    CHECK(s.bucket_ms == 3600000 && strcmp(s.type, "code.assigned") == 0, "hour, type");

    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"[]", "object"},
        {"{\"to\":1}", "'from' is required"},
        {"{\"from\":1}", "'to' is required"},
        {"{\"from\":null,\"to\":1}", "'from' is required"},
        {"{\"from\":2,\"to\":1}", "inverted"},
        {"{\"from\":-1,\"to\":1}", "'from'"},
        {"{\"from\":0,\"to\":32503680000001}", "'to'"},
        {"{\"from\":0,\"to\":1,\"bucket\":\"week\"}", "'bucket'"},
        {"{\"from\":0,\"to\":1,\"bucket\":\"Hour\"}", "'bucket'"},
        {"{\"from\":0,\"to\":1,\"bucket\":\"\"}", "'bucket'"},
        {"{\"from\":0,\"to\":1,\"bucket\":3600000}", "'bucket'"},
        {"{\"from\":0,\"to\":1,\"bucket\":\"hour!!!!!\"}", "'bucket'"},
        {"{\"from\":0,\"to\":1,\"type\":\"\"}", "'type'"},
        {"{\"from\":0,\"to\":1,\"service\":\"chance\"}", "'service'"},
        {"{\"from\":0,\"to\":1,\"limit\":10}", "'limit'"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        CHECK(parse_stats(bad[i].text, &s, err) == -1, "%s accepted", bad[i].text);
        CHECK(strstr(err, bad[i].msg) != NULL, "%s: err '%s' lacks \"%s\"", bad[i].text, err,
              bad[i].msg);
    }

    /*
     * The span: (to - from) / bucket must stay below LOGGER_STATS_BUCKETS_MAX (query.c refuses
     * at equality, although query.h says "may not exceed").
     */
    static const struct {
        const char *bucket;
        long long ms;
    } spans[] = {{"hour", 3600000}, {"day", 86400000}};
    for (size_t i = 0; i < ARRAY_SIZE(spans); i++) {
        long long from = 1700000000000LL, edge = (long long)LOGGER_STATS_BUCKETS_MAX * spans[i].ms;
        char text[160];
        snprintf(text, sizeof(text), "{\"from\":%lld,\"to\":%lld,\"bucket\":\"%s\"}", from,
                 from + edge - 1, spans[i].bucket);
        CHECK(parse_stats(text, &s, err) == 0, "%s: span just below the limit: %s", spans[i].bucket,
              err);
        snprintf(text, sizeof(text), "{\"from\":%lld,\"to\":%lld,\"bucket\":\"%s\"}", from,
                 from + edge, spans[i].bucket);
        CHECK(parse_stats(text, &s, err) == -1 && strstr(err, "narrow"), "%s: span at the limit",
              spans[i].bucket);
        CHECK(strstr(err, spans[i].bucket) != NULL, "message names the bucket: %s", err);
    }
    /* The whole range in days is far over; in hours even more. */
    CHECK(parse_stats("{\"from\":0,\"to\":32503680000000}", &s, err) == -1, "0..TS_MAX by day");
}

static const struct test_case cases[] = {
    {"query_defaults", test_query_defaults},
    {"query_fields", test_query_fields},
    {"query_refuses", test_query_refuses},
    {"cursor_round_trip", test_cursor_round_trip},
    {"cursor_reuse", test_cursor_reuse},
    {"cursor_mangled", test_cursor_mangled},
    {"stats", test_stats},
};

HARNESS_MAIN("logquery", cases)
