/* Unit tests of the JSON validation helpers: field lists, duplicate keys, depth, typed getters. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "json.h"

static cJSON *
parse(const char *text)
{
    cJSON *j = cJSON_Parse(text);
    CHECK(j != NULL, "test input does not parse: %.80s", text);
    return j;
}

static void
test_check_fields(void)
{
    static const char *const allowed[] = {"a", "b", "user_id", NULL};
    static const char *const none[] = {NULL};
    char err[128];

    static const struct {
        const char *json;
        const char *const *allowed;
        int rc;
        const char *msg; /* substring of err on failure */
    } cases[] = {
        {"{}", allowed, 0, NULL},
        {"{}", none, 0, NULL},
        {"{\"a\":1}", allowed, 0, NULL},
        {"{\"a\":1,\"b\":2,\"user_id\":3}", allowed, 0, NULL},
        {"{\"a\":1,\"zzz\":2}", allowed, -1, "'zzz'"},
        {"{\"A\":1}", allowed, -1, "'A'"},
        {"{\"user\":1}", allowed, -1, "'user'"},
        {"{\"user_idx\":1}", allowed, -1, "'user_idx'"},
        {"{\"a\":1}", none, -1, "'a'"},
        {"[]", allowed, -1, "object"},
        {"\"a\"", allowed, -1, "object"},
        {"null", allowed, -1, "object"},
        {"{\"a\":{\"zzz\":1}}", allowed, 0, NULL}, /* only the top level is checked */
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        cJSON *j = parse(cases[i].json);
        err[0] = '\0';
        int rc = json_check_fields(j, cases[i].allowed, err, sizeof(err));
        CHECK(rc == cases[i].rc, "%s: rc %d", cases[i].json, rc);
        if (rc != 0 && cases[i].msg) {
            CHECK(strstr(err, cases[i].msg) != NULL, "%s: err '%s' lacks %s", cases[i].json, err,
                  cases[i].msg);
        }
        cJSON_Delete(j);
    }
    CHECK(json_check_fields(NULL, allowed, err, sizeof(err)) == -1, "NULL accepted");

    /* A hostile key is truncated in the message, never overflowing err. */
    char big[600];
    memset(big, 'k', sizeof(big));
    big[sizeof(big) - 1] = '\0';
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, big, 1);
    char small[32];
    memset(small, 'X', sizeof(small));
    CHECK(json_check_fields(j, allowed, small, 16) == -1, "long key accepted");
    CHECK(memchr(small, '\0', 16) != NULL && small[16] == 'X', "err overflowed its length");
    cJSON_Delete(j);
}

static void
test_duplicate_keys(void)
{
    static const struct {
        const char *json;
        bool dup;
    } cases[] = {
        {"{}", false},
        {"{\"a\":1,\"b\":2}", false},
        {"{\"a\":1,\"a\":2}", true},
        {"{\"a\":1,\"b\":2,\"a\":3}", true},
        {"{\"a\":1,\"A\":2}", false},
        {"{\"a\":{\"a\":1}}", false},
        {"{\"a\":{\"b\":1,\"b\":2}}", true},
        {"{\"x\":[1,{\"k\":1,\"k\":2}]}", true},
        {"[{\"k\":1},{\"k\":2}]", false},
        {"[[[{\"q\":[{\"z\":1,\"y\":2,\"z\":3}]}]]]", true},
        {"{\"\":1,\"\":2}", true},
        {"{\"\\u00e9\":1,\"\xc3\xa9\":2}", true}, /* the same key, escaped and raw */
        {"[1,2,3]", false},
        {"\"a\"", false},
        {"{\"a\":[],\"b\":{},\"c\":null}", false},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        cJSON *j = parse(cases[i].json);
        CHECK(json_has_duplicate_keys(j) == cases[i].dup, "%s: want %d", cases[i].json,
              cases[i].dup);
        cJSON_Delete(j);
    }
    CHECK(!json_has_duplicate_keys(NULL), "NULL has duplicates");
}

static double
seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/*
 * The RPC server runs the duplicate check on every request, on the loop thread, before any
 * handler: a request within the frame limit must not stall the loop. 40 000 short keys (about
 * 340 KB; the default limit of 1 MiB holds 110 000) take milliseconds for a linear or n log n
 * check, even under ASan; a pairwise scan takes seconds.
 */
static void
test_duplicate_keys_cost(void)
{
    struct sbuf b = {0};
    sbuf_appends(&b, "{");
    for (int i = 0; i < 40000; i++) {
        sbuf_appendf(&b, "%s\"%x\":0", i ? "," : "", i);
    }
    sbuf_appends(&b, "}");
    cJSON *j = cJSON_ParseWithLength(b.data, b.len);
    CHECK(j != NULL, "big object does not parse");
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool dup = json_has_duplicate_keys(j);
    double took = seconds_since(&t0);
    CHECK(!dup, "false duplicate");
    CHECK(took < 1.0, "40000 distinct keys took %.1f s (quadratic scan?)", took);
    cJSON_Delete(j);
    sbuf_cleanup(&b);
}

static void
test_depth(void)
{
    static const struct {
        const char *json;
        int depth;
    } cases[] = {
        {"1", 0},
        {"\"s\"", 0},
        {"null", 0},
        {"{}", 1},
        {"[]", 1},
        {"[[]]", 2},
        {"{\"a\":1}", 1},
        {"{\"a\":[{\"b\":1}]}", 3},
        {"[1,[2,[3]],4]", 3},
        {"[[],[[[]]],[]]", 4},
        {"{\"a\":{},\"b\":[[]]}", 3},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        cJSON *j = parse(cases[i].json);
        CHECK(json_depth(j) == cases[i].depth, "%s: depth %d, want %d", cases[i].json,
              json_depth(j), cases[i].depth);
        cJSON_Delete(j);
    }
    CHECK(json_depth(NULL) == 0, "NULL depth");

    /* As deep as cJSON will parse. */
    struct sbuf b = {0};
    for (int i = 0; i < 900; i++) {
        sbuf_appends(&b, i % 2 ? "{\"k\":" : "[");
    }
    sbuf_appends(&b, "0");
    for (int i = 899; i >= 0; i--) {
        sbuf_appends(&b, i % 2 ? "}" : "]");
    }
    cJSON *j = parse(b.data);
    CHECK(json_depth(j) == 900, "deep: %d", json_depth(j));
    cJSON_Delete(j);
    sbuf_cleanup(&b);
}

static void
test_get_int(void)
{
    static const struct {
        const char *json; /* the value of "n" */
        long long min, max;
        int rc;
        long long want;
    } cases[] = {
        {"5", 0, 10, 0, 5},
        {"0", 0, 10, 0, 0},
        {"10", 0, 10, 0, 10},
        {"-1", 0, 10, -1, 0},
        {"11", 0, 10, -1, 0},
        {"-0", -5, 5, 0, 0},
        {"1.5", 0, 10, -1, 0},
        {"0.1", 0, 10, -1, 0},
        {"-2.5", -10, 10, -1, 0},
        {"1e2", 0, 1000, 0, 100},
        {"1.0", 0, 10, 0, 1}, /* JSON cannot tell 1.0 from 1; JS Number.isInteger agrees */
        {"1e300", 0, JSON_MAX_SAFE_INT, -1, 0},
        {"-1e300", -JSON_MAX_SAFE_INT, 0, -1, 0},
        {"9007199254740991", 0, JSON_MAX_SAFE_INT, 0, JSON_MAX_SAFE_INT},
        {"-9007199254740991", -JSON_MAX_SAFE_INT, 0, 0, -JSON_MAX_SAFE_INT},
        {"9007199254740992", 0, JSON_MAX_SAFE_INT + 10, -1, 0},
        {"9007199254740993", 0, JSON_MAX_SAFE_INT + 10, -1, 0},
        {"18446744073709551616", 0, JSON_MAX_SAFE_INT, -1, 0},
        {"\"5\"", 0, 10, -1, 0},
        {"\"1e2\"", 0, 1000, -1, 0},
        {"true", 0, 10, -1, 0},
        {"[5]", 0, 10, -1, 0},
        {"{}", 0, 10, -1, 0},
    };
    char text[128], err[128];
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        snprintf(text, sizeof(text), "{\"n\":%s}", cases[i].json);
        cJSON *j = parse(text);
        long long out = 777;
        err[0] = '\0';
        int rc = json_get_int(j, "n", true, cases[i].min, cases[i].max, &out, err, sizeof(err));
        CHECK(rc == cases[i].rc, "%s: rc %d (%s)", cases[i].json, rc, err);
        if (rc == 0 && cases[i].rc == 0) {
            CHECK(out == cases[i].want, "%s: got %lld, want %lld", cases[i].json, out,
                  cases[i].want);
        }
        if (rc != 0) {
            CHECK(out == 777, "%s: out written on error", cases[i].json);
            CHECK(strstr(err, "'n'") != NULL, "%s: err does not name the field: %s", cases[i].json,
                  err);
        }
        cJSON_Delete(j);
    }

    /* The message states the bounds. */
    cJSON *j = parse("{\"n\":99}");
    long long out = 0;
    CHECK(json_get_int(j, "n", true, 1, 10, &out, err, sizeof(err)) == -1, "99 in [1,10]");
    CHECK(strstr(err, "1") && strstr(err, "10"), "bounds missing: %s", err);
    /* Missing and null: optional leaves out untouched, required fails. */
    out = 42;
    CHECK(json_get_int(j, "m", false, 0, 10, &out, err, sizeof(err)) == 0 && out == 42,
          "optional missing");
    CHECK(json_get_int(j, "m", true, 0, 10, &out, err, sizeof(err)) == -1, "required missing");
    CHECK(strstr(err, "'m'") && strstr(err, "required"), "missing message: %s", err);
    CHECK(json_get_int(j, "N", true, 0, 100, &out, err, sizeof(err)) == -1, "key is case-blind");
    cJSON_Delete(j);
    j = parse("{\"n\":null}");
    out = 42;
    CHECK(json_get_int(j, "n", false, 0, 10, &out, err, sizeof(err)) == 0 && out == 42,
          "optional null");
    CHECK(json_get_int(j, "n", true, 0, 10, &out, err, sizeof(err)) == -1, "required null");
    cJSON_Delete(j);
    /* Not an object at all. */
    j = parse("[1]");
    CHECK(json_get_int(j, "n", true, 0, 10, &out, err, sizeof(err)) == -1, "array as object");
    cJSON_Delete(j);
}

static void
test_is_int(void)
{
    cJSON *n = cJSON_CreateNumber(3);
    CHECK(json_is_int(n), "3");
    cJSON_SetNumberValue(n, 3.25);
    CHECK(!json_is_int(n), "3.25");
    cJSON_SetNumberValue(n, 1.0 / 0.0);
    CHECK(!json_is_int(n), "inf");
    cJSON_SetNumberValue(n, 0.0 / 0.0);
    CHECK(!json_is_int(n), "nan");
    cJSON_SetNumberValue(n, -9007199254740991.0);
    CHECK(json_is_int(n), "-(2^53-1)");
    cJSON_SetNumberValue(n, 9007199254740992.0);
    CHECK(!json_is_int(n), "2^53");
    cJSON_Delete(n);
    cJSON *s = cJSON_CreateString("3");
    CHECK(!json_is_int(s), "string");
    cJSON_Delete(s);
    CHECK(!json_is_int(NULL), "NULL");
}

static void
test_get_string(void)
{
    static const struct {
        const char *value; /* raw bytes put into a string item */
        size_t maxlen;
        int rc;
    } cases[] = {
        {"hello", 10, 0},
        {"h", 1, 0},
        {"hello", 5, 0},
        {"hello!", 5, -1},
        {"", 10, -1},
        {"\xc3\xa9", 2, 0},           /* é is 2 bytes */
        {"\xc3\xa9", 1, -1},          /* maxlen counts bytes */
        {"\xf0\x9f\x98\x80", 4, 0},   /* 😀 */
        {"a\xff", 10, -1},            /* invalid byte */
        {"\xc0\xaf", 10, -1},         /* overlong */
        {"\xed\xa0\x80", 10, -1},     /* surrogate */
        {"\xf4\x90\x80\x80", 10, -1}, /* above U+10FFFF */
        {"\x80", 10, -1},             /* stray continuation */
        {"ab\xe2\x82", 10, -1},       /* truncated */
    };
    char err[128];
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddItemToObject(j, "s", cJSON_CreateString(cases[i].value));
        const char *out = "untouched";
        err[0] = '\0';
        int rc = json_get_string(j, "s", true, cases[i].maxlen, &out, err, sizeof(err));
        CHECK(rc == cases[i].rc, "case %zu: rc %d (%s)", i, rc, err);
        if (rc == 0) {
            CHECK(out != NULL && strcmp(out, cases[i].value) == 0, "case %zu: value", i);
        } else {
            CHECK(strcmp(out, "untouched") == 0, "case %zu: out written on error", i);
            CHECK(strstr(err, "'s'") != NULL, "case %zu: err lacks the field: %s", i, err);
        }
        cJSON_Delete(j);
    }

    cJSON *j = parse("{\"n\":5,\"b\":true,\"z\":null,\"a\":[\"x\"]}");
    const char *out = "untouched";
    CHECK(json_get_string(j, "n", true, 10, &out, err, sizeof(err)) == -1, "number as string");
    CHECK(strstr(err, "string") != NULL, "type message: %s", err);
    CHECK(json_get_string(j, "b", true, 10, &out, err, sizeof(err)) == -1, "bool as string");
    CHECK(json_get_string(j, "a", true, 10, &out, err, sizeof(err)) == -1, "array as string");
    CHECK(json_get_string(j, "z", false, 10, &out, err, sizeof(err)) == 0, "optional null");
    CHECK(json_get_string(j, "q", false, 10, &out, err, sizeof(err)) == 0, "optional missing");
    CHECK(strcmp(out, "untouched") == 0, "optional wrote out");
    CHECK(json_get_string(j, "z", true, 10, &out, err, sizeof(err)) == -1, "required null");
    CHECK(json_get_string(j, "q", true, 10, &out, err, sizeof(err)) == -1, "required missing");
    cJSON_Delete(j);

    /* Escaped non-ASCII decodes to valid UTF-8 and counts in bytes. */
    j = parse("{\"s\":\"\\u0633\\u0644\\u0627\\u0645 \\ud83c\\udf89\"}");
    CHECK(json_get_string(j, "s", true, 64, &out, err, sizeof(err)) == 0, "escaped: %s", err);
    CHECK(strcmp(out, "\xd8\xb3\xd9\x84\xd8\xa7\xd9\x85 \xf0\x9f\x8e\x89") == 0, "escaped value");
    CHECK(json_get_string(j, "s", true, 12, &out, err, sizeof(err)) == -1, "13 bytes in 12");
    cJSON_Delete(j);
}

static void
test_get_bool(void)
{
    static const struct {
        const char *json;
        int rc;
        bool want;
    } cases[] = {
        {"true", 0, true},       {"false", 0, false}, {"1", -1, false},  {"0", -1, false},
        {"\"true\"", -1, false}, {"[]", -1, false},   {"{}", -1, false},
    };
    char text[64], err[128];
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        snprintf(text, sizeof(text), "{\"b\":%s}", cases[i].json);
        cJSON *j = parse(text);
        bool out = !cases[i].want;
        int rc = json_get_bool(j, "b", true, &out, err, sizeof(err));
        CHECK(rc == cases[i].rc, "%s: rc %d", cases[i].json, rc);
        CHECK(rc != 0 || out == cases[i].want, "%s: value %d", cases[i].json, out);
        CHECK(rc == 0 || strstr(err, "'b'") != NULL, "%s: err lacks field: %s", cases[i].json, err);
        cJSON_Delete(j);
    }
    cJSON *j = parse("{\"z\":null}");
    bool out = true;
    CHECK(json_get_bool(j, "z", false, &out, err, sizeof(err)) == 0 && out, "optional null");
    CHECK(json_get_bool(j, "q", false, &out, err, sizeof(err)) == 0 && out, "optional missing");
    CHECK(json_get_bool(j, "q", true, &out, err, sizeof(err)) == -1, "required missing");
    cJSON_Delete(j);
}

static void
test_unknown_field_message_is_utf8(void)
{
    /* A 63-byte name followed by a 2-byte character: "%.64s" would cut it in half. */
    char body[128];
    snprintf(body, sizeof(body), "{\"%s\xc3\xa9\":1}",
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    cJSON *obj = cJSON_Parse(body);
    static const char *const allowed[] = {"a", NULL};
    char err[160];
    CHECK(obj && json_check_fields(obj, allowed, err, sizeof(err)) == -1, "refused");
    CHECK(util_utf8_valid(err, strlen(err)), "message is not UTF-8: %s", err);
    cJSON_Delete(obj);
    CHECK(util_utf8_prefix("ab\xc3\xa9", 3) == 2 && util_utf8_prefix("ab\xc3\xa9", 4) == 4 &&
              util_utf8_prefix("ab", 64) == 2,
          "util_utf8_prefix");
}

static const struct test_case cases[] = {
    {"unknown_field_message_is_utf8", test_unknown_field_message_is_utf8},
    {"check_fields", test_check_fields},
    {"duplicate_keys", test_duplicate_keys},
    {"duplicate_keys_cost", test_duplicate_keys_cost},
    {"depth", test_depth},
    {"get_int", test_get_int},
    {"is_int", test_is_int},
    {"get_string", test_get_string},
    {"get_bool", test_get_bool},
};

HARNESS_MAIN("json", cases)
