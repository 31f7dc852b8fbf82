/*
 * Unit tests of the gateway's strict query-string parser (urlquery.h): decoding, the allow-list,
 * repeats, the pair limit, UTF-8 and NUL, error messages and storage.
 */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "urlquery.h"

static const char *const names[] = {"a", "b", "status", "user name", "é", "a&b", NULL};

static void
test_accepts(void)
{
    static const struct {
        const char *raw;
        int n;             /* pairs parsed */
        const char *a, *b; /* values of a and b, NULL when absent */
    } cases[] = {
        {"", 0, NULL, NULL},
        {"&&&", 0, NULL, NULL},
        {"a=1", 1, "1", NULL},
        {"a=1&b=two", 2, "1", "two"},
        {"&&a=1&&b=2&&", 2, "1", "2"},
        {"b=2&a=1", 2, "1", "2"},
        {"a", 1, "", NULL},
        {"a=", 1, "", NULL},
        {"a&b=", 2, "", ""},
        {"a=x+y", 1, "x y", NULL},
        {"a=+++", 1, "   ", NULL},
        {"a=%2B", 1, "+", NULL}, /* an encoded '+' stays a plus */
        {"a=%41%62c", 1, "Abc", NULL},
        {"a=%c3%a9&b=%C3%A9", 2, "\xc3\xa9", "\xc3\xa9"}, /* either case of hex */
        {"a=\xc3\xa9", 1, "\xc3\xa9", NULL},              /* raw UTF-8 */
        {"a=x%26b%3Dc", 1, "x&b=c", NULL},                /* encoded separators are data */
        {"a=b=c", 1, "b=c", NULL},                        /* only the first '=' splits */
        {"%61=1", 1, "1", NULL},                          /* names are decoded too */
        {"a=%f0%9f%98%80", 1, "\xf0\x9f\x98\x80", NULL},
        {"a=%01%1f%7f", 1, "\x01\x1f\x7f", NULL}, /* control characters are the caller's concern */
        {"a=%25", 1, "%", NULL},
        {"a=%2525", 1, "%25", NULL}, /* decoded once */
        {"a=;", 1, ";", NULL},       /* ';' is not a separator */
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct urlquery q;
        char err[128] = "";
        int rc = urlquery_parse(cases[i].raw, names, &q, err, sizeof(err));
        CHECK(rc == 0, "'%s' refused: %s", cases[i].raw, err);
        if (rc == 0) {
            CHECK(q.n == cases[i].n, "'%s': %d pairs, want %d", cases[i].raw, q.n, cases[i].n);
            const char *a = urlquery_get(&q, "a"), *b = urlquery_get(&q, "b");
            CHECK(cases[i].a ? a && strcmp(a, cases[i].a) == 0 : a == NULL, "'%s': a = '%s'",
                  cases[i].raw, a ? a : "(none)");
            CHECK(cases[i].b ? b && strcmp(b, cases[i].b) == 0 : b == NULL, "'%s': b = '%s'",
                  cases[i].raw, b ? b : "(none)");
            CHECK(urlquery_get(&q, "status") == NULL, "'%s': status appeared", cases[i].raw);
        }
        urlquery_cleanup(&q);
    }

    /* Names outside ASCII, with a space, or with an encoded '&' are fine if allowed. */
    struct urlquery q;
    char err[128] = "";
    CHECK(urlquery_parse("user+name=x&%C3%A9=y&a%26b=z", names, &q, err, sizeof(err)) == 0,
          "decoded names: %s", err);
    CHECK(q.n == 3, "decoded names: %d pairs", q.n);
    const char *v = urlquery_get(&q, "user name");
    CHECK(v && strcmp(v, "x") == 0, "'user name'");
    v = urlquery_get(&q, "\xc3\xa9");
    CHECK(v && strcmp(v, "y") == 0, "'\xc3\xa9'");
    v = urlquery_get(&q, "a&b");
    CHECK(v && strcmp(v, "z") == 0, "'a&b'");
    CHECK(urlquery_get(&q, "a") == NULL && urlquery_get(&q, "b") == NULL, "split on encoded '&'");
    /* Pairs keep their order. */
    CHECK(strcmp(q.names[0], "user name") == 0 && strcmp(q.names[2], "a&b") == 0, "order");
    urlquery_cleanup(&q);
}

static void
test_refuses(void)
{
    static const struct {
        const char *raw;
        const char *msg; /* substring of err */
    } cases[] = {
        {"%", "malformed"},
        {"%4", "malformed"},
        {"%zz=1", "malformed"},
        {"%4g=1", "malformed"},
        {"a=%", "'a' is malformed"},
        {"a=%2", "'a' is malformed"},
        {"a=%%41", "'a' is malformed"},
        {"a=%g1", "'a' is malformed"},
        {"a=%+1", "'a' is malformed"},
        {"a=%00", "'a' is malformed"}, /* NUL */
        {"a=x%00y", "'a' is malformed"},
        {"%00=1", "malformed"},
        {"a%00=1", "malformed"},
        {"a=%ff", "'a' is malformed"},          /* not UTF-8 */
        {"a=%c3", "'a' is malformed"},          /* truncated */
        {"a=%c3%28", "'a' is malformed"},       /* bad continuation */
        {"a=%c0%80", "'a' is malformed"},       /* overlong NUL */
        {"a=%e0%80%80", "'a' is malformed"},    /* overlong NUL, 3 bytes */
        {"a=%ed%a0%80", "'a' is malformed"},    /* surrogate */
        {"a=%f4%90%80%80", "'a' is malformed"}, /* above U+10FFFF */
        {"a=\xff", "'a' is malformed"},         /* raw, not UTF-8 */
        {"\xc3=1", "malformed"},
        {"z=1", "unknown query parameter 'z'"},
        {"A=1", "unknown query parameter 'A'"}, /* names are case-sensitive */
        {"a+=1", "unknown query parameter 'a '"},
        {"a%20=1", "unknown query parameter 'a '"},
        {"=1", "unknown query parameter ''"},
        {"a=1&z", "unknown query parameter 'z'"},
        {"stat=1", "unknown"},
        {"statuses=1", "unknown"},
        {"a=1&a=2", "'a' is repeated"},
        {"a=1&a=1", "'a' is repeated"},
        {"a&a", "'a' is repeated"},
        {"a=1&%61=2", "'a' is repeated"}, /* the same name once decoded */
        {"a=1&b=2&a", "'a' is repeated"},
        {"user+name=1&user%20name=2", "repeated"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct urlquery q;
        char err[128] = "";
        int rc = urlquery_parse(cases[i].raw, names, &q, err, sizeof(err));
        CHECK(rc == -1, "'%s' accepted", cases[i].raw);
        CHECK(strstr(err, cases[i].msg) != NULL, "'%s': err '%s' lacks \"%s\"", cases[i].raw, err,
              cases[i].msg);
        urlquery_cleanup(&q);
        CHECK(q.n == 0 && q.buf == NULL, "'%s': cleanup left state", cases[i].raw);
    }
    /* An empty allow-list refuses any pair, and accepts no pairs. */
    static const char *const none[] = {NULL};
    struct urlquery q;
    char err[128];
    CHECK(urlquery_parse("a=1", none, &q, err, sizeof(err)) == -1, "empty allow-list");
    urlquery_cleanup(&q);
    CHECK(urlquery_parse("&", none, &q, err, sizeof(err)) == 0 && q.n == 0, "nothing to refuse");
    urlquery_cleanup(&q);
}

static void
test_limit(void)
{
    /* Forty names n0..n39: more than URLQUERY_MAX. */
    char store[40][16]; /* room for any int: gcc -O1 checks the snprintf below */
    const char *many[41];
    for (int i = 0; i < 40; i++) {
        snprintf(store[i], sizeof(store[i]), "n%d", i);
        many[i] = store[i];
    }
    many[40] = NULL;
    char raw[512];
    for (int count = URLQUERY_MAX - 1; count <= URLQUERY_MAX + 1; count++) {
        size_t o = 0;
        for (int i = 0; i < count; i++) {
            o += (size_t)snprintf(raw + o, sizeof(raw) - o, "%sn%d=%d", i ? "&" : "", i, i);
        }
        struct urlquery q;
        char err[128] = "";
        int rc = urlquery_parse(raw, many, &q, err, sizeof(err));
        if (count <= URLQUERY_MAX) {
            CHECK(rc == 0 && q.n == count, "%d pairs: rc %d, n %d (%s)", count, rc, q.n, err);
            const char *last = urlquery_get(&q, store[count - 1]);
            char want[8];
            snprintf(want, sizeof(want), "%d", count - 1);
            CHECK(last && strcmp(last, want) == 0, "%d pairs: last value", count);
        } else {
            CHECK(rc == -1 && strstr(err, "too many") != NULL, "%d pairs: rc %d (%s)", count, rc,
                  err);
        }
        urlquery_cleanup(&q);
    }
    /* Empty pairs do not count against the limit. */
    size_t o = 0;
    for (int i = 0; i < URLQUERY_MAX; i++) {
        o += (size_t)snprintf(raw + o, sizeof(raw) - o, "&&n%d", i);
    }
    struct urlquery q;
    char err[128] = "";
    CHECK(urlquery_parse(raw, many, &q, err, sizeof(err)) == 0 && q.n == URLQUERY_MAX,
          "32 pairs among empty ones: %s", err);
    urlquery_cleanup(&q);
}

static void
test_storage(void)
{
    /* A long value, and a query of the shortest pairs (the most storage per input byte). */
    size_t n = 100000;
    char *raw = malloc(n * 3 + 3);
    char *want = malloc(n * 3 + 1), *w = want;
    memcpy(raw, "b=", 2);
    for (size_t i = 0; i < n; i++) {
        memcpy(raw + 2 + 3 * i, i % 2 ? "%41" : "+++", 3);
        w = stpcpy(w, i % 2 ? "A" : "   ");
    }
    raw[2 + 3 * n] = '\0';
    struct urlquery q;
    char err[128] = "";
    CHECK(urlquery_parse(raw, names, &q, err, sizeof(err)) == 0, "long value: %s", err);
    const char *v = urlquery_get(&q, "b");
    CHECK(v && strcmp(v, want) == 0, "long value: %zu bytes", v ? strlen(v) : 0);
    urlquery_cleanup(&q);
    free(raw);
    free(want);

    CHECK(urlquery_parse("a&b", names, &q, err, sizeof(err)) == 0 && q.n == 2, "a&b: %s", err);
    CHECK(strcmp(urlquery_get(&q, "a"), "") == 0 && strcmp(urlquery_get(&q, "b"), "") == 0,
          "a&b values");
    urlquery_cleanup(&q);
    urlquery_cleanup(&q); /* twice is harmless */
    CHECK(q.n == 0 && q.buf == NULL, "cleanup state");
}

static void
test_err_bounds(void)
{
    /* A long unknown name is cut in the message, and err never overflows its length. */
    char raw[400];
    memset(raw, 'x', 300);
    strcpy(raw + 300, "=1");
    struct urlquery q;
    char err[200];
    CHECK(urlquery_parse(raw, names, &q, err, sizeof(err)) == -1, "long name accepted");
    CHECK(strlen(err) < 100, "message quotes the whole name: %zu bytes", strlen(err));
    urlquery_cleanup(&q);

    /* The message quotes at most 64 bytes of a name, and never half a character: it goes to
     * the client in JSON. A 2-byte character across the cut is left out whole. */
    static const struct {
        int xs;            /* 'x's before the "é" */
        const char *shown; /* what follows them in the message */
    } cut[] = {
        {62, "\xc3\xa9'"}, /* 64 bytes: all of it */
        {63, "'"},         /* the character would straddle the cut */
        {64, "'"},
        {61, "\xc3\xa9'"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cut); i++) {
        memset(raw, 'x', (size_t)cut[i].xs);
        strcpy(raw + cut[i].xs, "%C3%A9%C3%A9=1");
        char want[100] = "unknown query parameter '";
        memset(want + strlen(want), 'x', (size_t)cut[i].xs);
        want[25 + cut[i].xs] = '\0';
        strcat(want, cut[i].shown);
        CHECK(urlquery_parse(raw, names, &q, err, sizeof(err)) == -1, "%d x: accepted", cut[i].xs);
        CHECK(strcmp(err, want) == 0, "%d x: err '%s'", cut[i].xs, err);
        CHECK(util_utf8_valid(err, strlen(err)), "%d x: err is not UTF-8", cut[i].xs);
        urlquery_cleanup(&q);
    }

    char small[32];
    memset(small, '#', sizeof(small));
    CHECK(urlquery_parse("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz=1", names, &q, small, 16) == -1,
          "unknown accepted");
    CHECK(memchr(small, '\0', 16) != NULL && small[16] == '#', "err overflowed");
    urlquery_cleanup(&q);
}

static const struct test_case cases[] = {
    {"accepts", test_accepts}, {"refuses", test_refuses},       {"limit", test_limit},
    {"storage", test_storage}, {"err_bounds", test_err_bounds},
};

HARNESS_MAIN("urlquery", cases)
