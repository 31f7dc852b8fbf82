/*
 * Unit tests of the gateway's raw JSON pre-checks (body.h): UTF-8, NUL bytes and \u0000 escapes,
 * nesting depth, and what they agree on with cJSON for valid JSON.
 */
#include <stdlib.h>
#include <string.h>

#include "body.h"
#include "harness.h"
#include "json.h"

/* Text without embedded NULs; the cases with NUL bytes pass their length explicitly. */
static int
check(const char *s, int max_depth)
{
    return body_check_raw(s, strlen(s), max_depth);
}

static void
test_plain(void)
{
    static const struct {
        const char *text;
        int want;
    } cases[] = {
        {"{}", BODY_OK},
        {"[]", BODY_OK},
        {"", BODY_OK}, /* not JSON, but nothing for these checks to refuse */
        {"{\"a\":\"b\",\"n\":[1,2,3],\"t\":true}", BODY_OK},
        {"{\"name\":\"Ren\xc3\xa9\",\"emoji\":\"\xf0\x9f\x98\x80\"}", BODY_OK},
        {"{\"a\":\"\\u00e9\\ud83d\\ude00\"}", BODY_OK},
        {"\"just a string\"", BODY_OK},
        {"not json at all", BODY_OK}, /* cJSON refuses it later; not this check's job */
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        int got = check(cases[i].text, 16);
        CHECK(got == cases[i].want, "'%s': got %d, want %d", cases[i].text, got, cases[i].want);
    }
}

static void
test_utf8(void)
{
    static const char *const bad[] = {
        "{\"a\":\"\xff\"}",             /* never valid */
        "{\"a\":\"\xc0\xaf\"}",         /* overlong '/' */
        "{\"a\":\"\xe0\x80\xaf\"}",     /* overlong, 3 bytes */
        "{\"a\":\"\xed\xa0\x80\"}",     /* a UTF-16 surrogate */
        "{\"a\":\"\xf4\x90\x80\x80\"}", /* above U+10FFFF */
        "{\"a\":\"\x80\"}",             /* stray continuation byte */
        "{\"a\":\"\xe2\x82\"}",         /* truncated sequence */
        "{\"a\xe9\":1}",                /* Latin-1 in a key */
        "\xef\xbb\xbf{}\xe2",           /* truncated at the very end */
        "{}\xc3",                       /* a lead byte as the last byte */
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        CHECK(check(bad[i], 16) == BODY_BAD_UTF8, "bad case %zu accepted", i);
    }
    /* Every valid sequence length, at the edges of its range. */
    static const char *const good[] = {
        "[\"\x7f\"]",         "[\"\xc2\x80\"]",         "[\"\xdf\xbf\"]",
        "[\"\xe0\xa0\x80\"]", "[\"\xed\x9f\xbf\"]", /* U+D7FF, just below the surrogates */
        "[\"\xee\x80\x80\"]",                       /* U+E000, just above */
        "[\"\xef\xbf\xbf\"]", "[\"\xf0\x90\x80\x80\"]", "[\"\xf4\x8f\xbf\xbf\"]", /* U+10FFFF */
    };
    for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
        CHECK(check(good[i], 16) == BODY_OK, "good case %zu refused", i);
    }
}

static void
test_nul(void)
{
    /* A raw NUL byte anywhere within len, in a string or not. */
    static const char with_nul[] = "{\"a\":\"x\0y\"}";
    CHECK(body_check_raw(with_nul, sizeof(with_nul) - 1, 16) == BODY_NUL, "NUL in a string");
    static const char nul_outside[] = "{\"a\":1}\0";
    CHECK(body_check_raw(nul_outside, sizeof(nul_outside) - 1, 16) == BODY_NUL, "NUL at the end");
    CHECK(body_check_raw("\0", 1, 16) == BODY_NUL, "a lone NUL");
    /* len bounds the scan: bytes after it are not the body's. */
    CHECK(body_check_raw(nul_outside, sizeof(nul_outside) - 2, 16) == BODY_OK, "NUL past len");
    CHECK(body_check_raw("[[[\xff", 3, 16) == BODY_OK, "a bad byte past len");

    static const struct {
        const char *text;
        int want;
    } cases[] = {
        {"{\"a\":\"\\u0000\"}", BODY_NUL},
        {"{\"a\":\"abc\\u0000def\"}", BODY_NUL},
        {"{\"\\u0000\":1}", BODY_NUL},         /* in a key */
        {"[\"\\u00000\"]", BODY_NUL},          /* followed by a digit: still the escape */
        {"[\"\\\\\\u0000\"]", BODY_NUL},       /* an escaped backslash, then the escape */
        {"[\"\\\"\\u0000\"]", BODY_NUL},       /* an escaped quote does not end the string */
        {"[\"\\\\u0000\"]", BODY_OK},          /* an escaped backslash, then text "u0000" */
        {"[\"\\\\\\\\u0000\"]", BODY_OK},      /* two escaped backslashes */
        {"[\"\\u0001\\u0100\"]", BODY_OK},     /* near misses */
        {"[\"\\u000\"]", BODY_OK},             /* too short to be one */
        {"[\"u0000\", \"0000\"]", BODY_OK},    /* no backslash */
        {"[\"\\u0000", BODY_NUL},              /* unterminated string: the escape is complete */
        {"[\"\\u000", BODY_OK},                /* cut inside the escape */
        {"[\"a\"] \\u0000", BODY_OK},          /* outside strings there are no escapes */
        {"[\"\\ud800\\udc00\"]", BODY_OK},     /* a surrogate pair is U+10000, not NUL */
        {"[\"\\\"\", \"\\u0000\"]", BODY_NUL}, /* the second string, after an escaped quote */
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        int got = check(cases[i].text, 16);
        CHECK(got == cases[i].want, "'%s': got %d, want %d", cases[i].text, got, cases[i].want);
    }
}

static void
test_depth(void)
{
    static const struct {
        const char *text;
        int max;
        int want;
    } cases[] = {
        {"1", 0, BODY_OK},
        {"[]", 0, BODY_TOO_DEEP},
        {"[]", 1, BODY_OK},
        {"[[]]", 1, BODY_TOO_DEEP},
        {"[[[]]]", 3, BODY_OK},
        {"[[[]]]", 2, BODY_TOO_DEEP},
        {"{\"a\":[{\"b\":[]}]}", 4, BODY_OK},
        {"{\"a\":[{\"b\":[]}]}", 3, BODY_TOO_DEEP},
        {"[[],[],[],[],[]]", 2, BODY_OK}, /* siblings do not add up */
        {"[[[]],[[]],[[]]]", 3, BODY_OK},
        {"{\"a\":{},\"b\":{},\"c\":{\"d\":{}}}", 3, BODY_OK},
        {"{\"a\":{},\"b\":{},\"c\":{\"d\":{}}}", 2, BODY_TOO_DEEP},
        /* brackets in strings are text */
        {"{\"[[[[\":\"{{{{\"}", 1, BODY_OK},
        {"[\"\\\"[[[[\"]", 1, BODY_OK},        /* after an escaped quote, still in the string */
        {"[\"\\\\\",[[]]]", 2, BODY_TOO_DEEP}, /* after an escaped backslash the string has ended */
        {"[\"\\\\\",[[]]]", 3, BODY_OK},
        {"[\"]]]]\",[[]]]", 2, BODY_TOO_DEEP}, /* closers in a string do not lower the depth */
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        int got = check(cases[i].text, cases[i].max);
        CHECK(got == cases[i].want, "'%s' (max %d): got %d, want %d", cases[i].text, cases[i].max,
              got, cases[i].want);
    }

    /* Far deeper than any stack would take: the scan is iterative and stops early. */
    size_t n = 1000000;
    char *deep = malloc(2 * n);
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    CHECK(body_check_raw(deep, 2 * n, 16) == BODY_TOO_DEEP, "a million '['");
    CHECK(body_check_raw(deep + n - 16, 32, 16) == BODY_OK, "16 levels at 16");
    CHECK(body_check_raw(deep + n - 17, 34, 16) == BODY_TOO_DEEP, "17 levels at 16");
    free(deep);
}

/* For valid JSON without \u0000, the depth verdict is exactly cJSON's depth against the limit. */
static void
test_agrees_with_cjson(void)
{
    static const char *const docs[] = {
        "{}",
        "[1,[2,[3,[4]]]]",
        "{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":[]}}}}}",
        "{\"s\":\"[{\\\"}]\",\"x\":[[\"\\\\\"],{\"k\":[\"]\"]}]}",
        "[\"\\\\\",\"\\\"\",[[[\"\\/\"]]]]",
        "{\"\xc3\xa9[\":[\"\xf0\x9f\x98\x80{\"]}",
    };
    for (size_t i = 0; i < ARRAY_SIZE(docs); i++) {
        cJSON *j = cJSON_Parse(docs[i]);
        CHECK(j != NULL, "test input %zu does not parse", i);
        int depth = json_depth(j);
        for (int max = 0; max <= depth + 1; max++) {
            int want = depth <= max ? BODY_OK : BODY_TOO_DEEP;
            CHECK(check(docs[i], max) == want, "doc %zu (depth %d) at max %d: got %d", i, depth,
                  max, check(docs[i], max));
        }
        cJSON_Delete(j);
    }
}

static void
test_several_faults(void)
{
    /* Any fault is reported; which one first is not part of the contract. */
    static const char bad_and_nul[] = "[\"\xff\0\"]";
    CHECK(body_check_raw(bad_and_nul, sizeof(bad_and_nul) - 1, 16) != BODY_OK, "bad UTF-8 + NUL");
    CHECK(check("[[[\"\xff\"]]]", 1) != BODY_OK, "bad UTF-8 + deep");
    CHECK(check("[[[\"\\u0000\"]]]", 1) != BODY_OK, "escape + deep");
}

static void
test_messages(void)
{
    const char *m[] = {body_check_message(BODY_OK), body_check_message(BODY_BAD_UTF8),
                       body_check_message(BODY_NUL), body_check_message(BODY_TOO_DEEP)};
    for (size_t i = 0; i < ARRAY_SIZE(m); i++) {
        CHECK(m[i] != NULL && *m[i] != '\0', "message %zu empty", i);
        for (size_t k = 0; k < i; k++) {
            CHECK(strcmp(m[i], m[k]) != 0, "messages %zu and %zu are the same", k, i);
        }
    }
    CHECK(strstr(m[BODY_BAD_UTF8], "UTF-8") != NULL, "%s", m[BODY_BAD_UTF8]);
    CHECK(strstr(m[BODY_NUL], "NUL") != NULL, "%s", m[BODY_NUL]);
    CHECK(strstr(m[BODY_TOO_DEEP], "nested") != NULL, "%s", m[BODY_TOO_DEEP]);
}

static const struct test_case cases[] = {
    {"plain", test_plain},
    {"utf8", test_utf8},
    {"nul", test_nul},
    {"depth", test_depth},
    {"agrees_with_cjson", test_agrees_with_cjson},
    {"several_faults", test_several_faults},
    {"messages", test_messages},
};

HARNESS_MAIN("body", cases)
