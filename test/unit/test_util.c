/* Unit tests of the shared helpers: ISO time, host:port, UTF-8 validation, sbuf, randomness. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "util.h"

static void
test_time_known_values(void)
{
    static const struct {
        const char *text;
        int64_t ms;
    } cases[] = {
        {"1970-01-01T00:00:00Z", 0},
        {"1970-01-01T00:00:00.001Z", 1},
        {"1970-01-01T00:00:01Z", 1000},
        {"2026-01-02T03:04:05Z", 1767323045000LL},
        {"2026-01-02T03:04:05.123Z", 1767323045123LL},
        {"2026-01-02T03:04:05.5Z", 1767323045500LL},
        {"2026-01-02T03:04:05.12Z", 1767323045120LL},
        {"2026-01-02T03:04:05.123456Z", 1767323045123LL}, /* extra digits are truncated */
        {"2026-01-02T03:04:05+00:00", 1767323045000LL},
        {"2024-02-29T12:00:00Z", 1709208000000LL},
        {"2000-02-29T00:00:00Z", 951782400000LL},
        {"2038-01-19T03:14:08Z", 2147483648000LL}, /* past 32-bit time_t */
        {"9999-12-31T23:59:59.999Z", 253402300799999LL},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        int64_t ms = -7;
        int rc = time_parse_iso(cases[i].text, &ms);
        CHECK(rc == 0 && ms == cases[i].ms, "%s: rc %d ms %lld, want %lld", cases[i].text, rc,
              (long long)ms, (long long)cases[i].ms);
    }
    char buf[32];
    time_format_iso(1767323045123LL, buf, sizeof(buf));
    CHECK(strcmp(buf, "2026-01-02T03:04:05.123Z") == 0, "format: %s", buf);
    time_format_iso(0, buf, sizeof(buf));
    CHECK(strcmp(buf, "1970-01-01T00:00:00.000Z") == 0, "format epoch: %s", buf);
    time_format_iso(253402300799999LL, buf, sizeof(buf));
    CHECK(strcmp(buf, "9999-12-31T23:59:59.999Z") == 0, "format max: %s", buf);
}

static void
test_time_round_trip(void)
{
    char buf[32];
    /* Every day boundary across leap years, and assorted milliseconds. */
    for (int64_t ms = 0; ms < 4102444800000LL; ms += 86400000LL * 7 + 3600000LL + 61001LL) {
        time_format_iso(ms, buf, sizeof(buf));
        int64_t back = -1;
        CHECK(time_parse_iso(buf, &back) == 0 && back == ms, "%lld -> %s -> %lld", (long long)ms,
              buf, (long long)back);
        CHECK(strlen(buf) == 24, "%s: not 24 characters", buf);
    }
    /* Truncated output never overflows. */
    char small[8];
    memset(small, 'X', sizeof(small));
    time_format_iso(1767323045123LL, small, 5);
    CHECK(small[4] == '\0' && small[5] == 'X', "small buffer overflowed");
}

/* Epoch milliseconds before 1970 are still epoch milliseconds. */
static void
test_time_format_negative(void)
{
    char buf[32];
    time_format_iso(-1, buf, sizeof(buf));
    CHECK(strcmp(buf, "1969-12-31T23:59:59.999Z") == 0, "format(-1): %s", buf);
    time_format_iso(-1500, buf, sizeof(buf));
    CHECK(strcmp(buf, "1969-12-31T23:59:58.500Z") == 0, "format(-1500): %s", buf);
}

static void
test_time_rejects(void)
{
    static const char *bad[] = {
        "2026-02-31T00:00:00Z", /* 31 February */
        "2026-02-30T00:00:00Z",
        "2025-02-29T00:00:00Z", /* not a leap year */
        "2100-02-29T00:00:00Z", /* not a leap year either */
        "2026-04-31T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-00-01T00:00:00Z",
        "2026-01-00T00:00:00Z",
        "2026-01-32T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T23:60:00Z",
        "2026-01-01T23:59:61Z",
        "2026-01-02T03:04:05",       /* no zone */
        "2026-01-02T03:04:05+01:00", /* not UTC */
        "2026-01-02T03:04:05-00:00",
        "2026-01-02T03:04:05+0000",
        "2026-01-02T03:04:05Z ", /* trailing space */
        "2026-01-02T03:04:05ZZ",
        "2026-01-02T03:04:05.Z", /* '.' without digits */
        "2026-01-02T03:04:05,123Z",
        "2026-01-02 03:04:05Z",
        "2026-1-02T03:04:05Z",
        "26-01-02T03:04:05Z",
        "1969-12-31T23:59:59Z",
        " 2026-01-02T03:04:05Z",
        "",
        "not a time",
        "2026-01-02T03:04:-5Z", /* negative fields */
        "2026-01-02T03:-4:05Z",
        "2026-01-02T-3:04:05Z",
        "2026-+1-02T03:04:05Z", /* signs and spaces inside fields */
        "2026- 1-02T03:04:05Z",
        "2026-01-02T03:04: 5Z",
        "+2026-01-02T03:04:05Z",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        int64_t ms = 12345;
        int rc = time_parse_iso(bad[i], &ms);
        CHECK(rc == -1, "'%s' accepted as %lld", bad[i], (long long)ms);
        CHECK(rc == 0 || ms == 12345, "'%s': ms written on error", bad[i]);
    }
}

static void
test_hostport(void)
{
    static const struct {
        const char *in;
        int rc;
        const char *host;
        int port;
    } cases[] = {
        {"127.0.0.1:80", 0, "127.0.0.1", 80},
        {"localhost:6379", 0, "localhost", 6379},
        {"example.com:65535", 0, "example.com", 65535},
        {"[::1]:8080", 0, "::1", 8080},
        {"[fe80::1%eth0]:1", 0, "fe80::1%eth0", 1},
        {"[2001:db8::2]:443", 0, "2001:db8::2", 443},
        {"host:70000", -1, NULL, 0},
        {"host:65536", -1, NULL, 0},
        {"host:-1", -1, NULL, 0},
        {"host:99999999999999999999", -1, NULL, 0},
        {"host", -1, NULL, 0},
        {"host:", -1, NULL, 0},
        {":80", -1, NULL, 0},
        {"host:80x", -1, NULL, 0},
        {"host:0x50", -1, NULL, 0},
        {"[::1]", -1, NULL, 0},
        {"[::1]80", -1, NULL, 0},
        {"[::1]:", -1, NULL, 0},
        {"[]:80", -1, NULL, 0},
        {"[::1:80", -1, NULL, 0},
        {"", -1, NULL, 0},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        char *host = NULL;
        int port = -5;
        int rc = util_parse_hostport(cases[i].in, &host, &port);
        CHECK(rc == cases[i].rc, "'%s': rc %d", cases[i].in, rc);
        if (rc == 0 && cases[i].rc == 0) {
            CHECK(host && strcmp(host, cases[i].host) == 0, "'%s': host '%s'", cases[i].in,
                  host ? host : "(null)");
            CHECK(port == cases[i].port, "'%s': port %d", cases[i].in, port);
        }
        if (rc != 0) {
            CHECK(host == NULL && port == -5, "'%s': outputs written on error", cases[i].in);
        }
        free(host);
    }
}

/* The textbook definition (Unicode 15, table 3-7), written independently of src/. */
static bool
ref_utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t n;
        unsigned lo = 0x80, hi = 0xbf;
        if (c <= 0x7f) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 2;
        } else if (c == 0xe0) {
            n = 3, lo = 0xa0;
        } else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef) {
            n = 3;
        } else if (c == 0xed) {
            n = 3, hi = 0x9f;
        } else if (c == 0xf0) {
            n = 4, lo = 0x90;
        } else if (c >= 0xf1 && c <= 0xf3) {
            n = 4;
        } else if (c == 0xf4) {
            n = 4, hi = 0x8f;
        } else {
            return false;
        }
        if (len - i < n || s[i + 1] < lo || s[i + 1] > hi) {
            return false;
        }
        for (size_t k = 2; k < n; k++) {
            if (s[i + k] < 0x80 || s[i + k] > 0xbf) {
                return false;
            }
        }
        i += n;
    }
    return true;
}

static void
test_utf8_valid_cases(void)
{
    static const struct {
        const char *s;
        bool ok;
    } cases[] = {
        {"", true},
        {"plain ascii", true},
        {"\xc3\xa9", true},
        {"\xe2\x82\xac", true},
        {"\xf0\x9f\x98\x80", true},
        {"\xef\xbf\xbf", true},
        {"\xf4\x8f\xbf\xbf", true},
        {"\xc0\x80", false},
        {"\xc1\xbf", false},
        {"\xe0\x9f\xbf", false},
        {"\xf0\x8f\xbf\xbf", false},
        {"\xed\xa0\x80", false},
        {"\xed\xbf\xbf", false},
        {"\xf4\x90\x80\x80", false},
        {"\xf5\x80\x80\x80", false},
        {"\xf8\x88\x80\x80\x80", false},
        {"\x80", false},
        {"a\xbf", false},
        {"\xc3", false},
        {"\xe2\x82", false},
        {"\xf0\x9f\x98", false},
        {"\xe2\x28\xa1", false},
        {"\xfe", false},
        {"\xff", false},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        CHECK(util_utf8_valid(cases[i].s, strlen(cases[i].s)) == cases[i].ok, "case %zu", i);
    }
    /* The length is honoured: an embedded NUL is U+0000, and bytes past len are not read. */
    CHECK(util_utf8_valid("a\0b", 3), "embedded NUL");
    CHECK(util_utf8_valid("\xc3\xa9\xff", 2), "byte past len was read");
    CHECK(!util_utf8_valid("\xc3\xa9", 1), "sequence cut by len");
}

/* Every 1-, 2- and 3-byte input, and 4-byte inputs over all lead and second bytes. */
static void
test_utf8_valid_exhaustive(void)
{
    unsigned char b[4];
    long mismatches = 0;
    for (unsigned x = 0; x < 256; x++) {
        b[0] = (unsigned char)x;
        mismatches += util_utf8_valid((char *)b, 1) != ref_utf8_valid(b, 1);
        for (unsigned y = 0; y < 256; y++) {
            b[1] = (unsigned char)y;
            mismatches += util_utf8_valid((char *)b, 2) != ref_utf8_valid(b, 2);
            for (unsigned z = 0; z < 256 && x >= 0xc0; z++) {
                b[2] = (unsigned char)z;
                mismatches += util_utf8_valid((char *)b, 3) != ref_utf8_valid(b, 3);
            }
        }
    }
    static const unsigned char tails[] = {0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90,
                                          0x9f, 0xa0, 0xbf, 0xc0, 0xff};
    for (unsigned x = 0xf0; x < 256; x++) {
        for (unsigned y = 0; y < 256; y++) {
            for (size_t z = 0; z < sizeof(tails); z++) {
                for (size_t w = 0; w < sizeof(tails); w++) {
                    b[0] = (unsigned char)x, b[1] = (unsigned char)y;
                    b[2] = tails[z], b[3] = tails[w];
                    mismatches += util_utf8_valid((char *)b, 4) != ref_utf8_valid(b, 4);
                }
            }
        }
    }
    CHECK(mismatches == 0, "%ld inputs judged differently from the Unicode table", mismatches);
}

static void
test_sbuf(void)
{
    struct sbuf b = {0};
    char *s = sbuf_steal(&b);
    CHECK(s != NULL && *s == '\0', "steal of an empty sbuf");
    free(s);

    sbuf_appends(&b, "abc");
    sbuf_append(&b, "d\0e", 3);
    CHECK(b.len == 6 && memcmp(b.data, "abcd\0e", 7) == 0, "append with NUL: len %zu", b.len);
    sbuf_appendf(&b, "[%d:%s]", 42, "x");
    CHECK(b.len == 12 && memcmp(b.data + 6, "[42:x]", 7) == 0, "appendf: len %zu", b.len);
    CHECK(b.cap > b.len, "no room for the terminator");
    sbuf_cleanup(&b);
    CHECK(b.data == NULL && b.len == 0 && b.cap == 0, "cleanup");

    /* appendf first, into an empty sbuf, larger than the initial capacity. */
    char big[1000];
    memset(big, 'q', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    sbuf_appendf(&b, "%s|%s", big, big);
    CHECK(b.len == 1999 && b.data[999] == '|' && b.data[1999] == '\0', "big appendf");
    sbuf_cleanup(&b);

    /* Many small appends equal one expected string. */
    struct sbuf want = {0};
    for (int i = 0; i < 20000; i++) {
        if (i % 3 == 0) {
            sbuf_appendf(&b, "%d,", i);
        } else if (i % 3 == 1) {
            char t[16];
            int n = snprintf(t, sizeof(t), "%d,", i);
            sbuf_append(&b, t, (size_t)n);
        } else {
            char t[16];
            snprintf(t, sizeof(t), "%d,", i);
            sbuf_appends(&b, t);
        }
        char t[16];
        int n = snprintf(t, sizeof(t), "%d,", i);
        for (int k = 0; k < n; k++) {
            sbuf_append(&want, &t[k], 1);
        }
    }
    CHECK(b.len == want.len && memcmp(b.data, want.data, b.len + 1) == 0, "mixed appends");
    size_t len = b.len;
    s = sbuf_steal(&b);
    CHECK(strlen(s) == len && b.data == NULL && b.len == 0, "steal");
    free(s);
    sbuf_cleanup(&want);
    sbuf_appendf(&b, "%s", "");
    s = sbuf_steal(&b);
    CHECK(s != NULL && *s == '\0', "empty appendf");
    free(s);
}

static void
test_strings(void)
{
    char *s = xasprintf("%s-%d-%c", "ab", 12, 'z');
    CHECK(strcmp(s, "ab-12-z") == 0, "xasprintf: %s", s);
    free(s);
    s = xstrndup("abcdef", 3);
    CHECK(strcmp(s, "abc") == 0, "xstrndup: %s", s);
    free(s);
    s = xstrdup("");
    CHECK(s && *s == '\0', "xstrdup empty");
    free(s);
    unsigned char w[16];
    memset(w, 0xaa, sizeof(w));
    util_wipe(w + 2, 10);
    CHECK(w[1] == 0xaa && w[2] == 0 && w[11] == 0 && w[12] == 0xaa, "wipe range");
    CHECK(time_mono_ms() > 0 && time_wall_ms() > 1700000000000LL, "clocks");
}

static void
test_random_below(void)
{
    enum { BUCKETS = 31, DRAWS = 100000 };
    long count[BUCKETS] = {0};
    for (int i = 0; i < DRAWS; i++) {
        uint64_t r = util_random_below(BUCKETS);
        CHECK(r < BUCKETS, "draw %llu out of range", (unsigned long long)r);
        if (r < BUCKETS) {
            count[r]++;
        }
    }
    /* Expected 3226 each, sd 56: +-15% is more than 8 sd, so this never flakes. */
    double expect = (double)DRAWS / BUCKETS;
    for (int b = 0; b < BUCKETS; b++) {
        CHECK(count[b] > expect * 0.85 && count[b] < expect * 1.15, "bucket %d: %ld draws", b,
              count[b]);
    }
    for (int i = 0; i < 1000; i++) {
        CHECK(util_random_below(1) == 0, "bound 1");
    }
    /* Just above 2^63, rejection drops almost half the space; both halves stay equally likely. */
    const uint64_t big = (1ULL << 63) + 12345;
    int upper = 0;
    for (int i = 0; i < 2000; i++) {
        uint64_t r = util_random_below(big);
        CHECK(r < big, "%llu >= bound", (unsigned long long)r);
        upper += r >= big / 2;
    }
    CHECK(upper > 850 && upper < 1150, "upper half hit %d of 2000 times", upper);
    uint64_t r = util_random_below(UINT64_MAX);
    CHECK(r < UINT64_MAX, "UINT64_MAX bound");
}

static void
test_random_hex(void)
{
    char a[65], b[65];
    util_random_hex(a, 32);
    util_random_hex(b, 32);
    CHECK(strlen(a) == 64, "length %zu", strlen(a));
    CHECK(strspn(a, "0123456789abcdef") == 64, "not lowercase hex: %s", a);
    CHECK(strcmp(a, b) != 0, "two ids equal");
    char small[5];
    memset(small, 'X', sizeof(small));
    util_random_hex(small, 2);
    CHECK(strlen(small) == 4, "2 bytes -> 4 characters");
    unsigned char bytes[64] = {0};
    util_random_bytes(bytes, sizeof(bytes));
    int zero = 0;
    for (size_t i = 0; i < sizeof(bytes); i++) {
        zero += bytes[i] == 0;
    }
    CHECK(zero < 16, "%d zero bytes of 64", zero);
}

static const struct test_case cases[] = {
    {"time_known_values", test_time_known_values},
    {"time_round_trip", test_time_round_trip},
    {"time_format_negative", test_time_format_negative},
    {"time_rejects", test_time_rejects},
    {"hostport", test_hostport},
    {"utf8_valid_cases", test_utf8_valid_cases},
    {"utf8_valid_exhaustive", test_utf8_valid_exhaustive},
    {"sbuf", test_sbuf},
    {"strings", test_strings},
    {"random_below", test_random_below},
    {"random_hex", test_random_hex},
};

HARNESS_MAIN("util", cases)
