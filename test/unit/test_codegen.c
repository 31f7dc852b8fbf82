/* Unit tests of the chance role's code and reward generator (roles/chance/codegen.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen.h"
#include "harness.h"
#include "json.h"

static void
test_alphabet(void)
{
    const char *a = CODEGEN_ALPHABET;
    CHECK(strlen(a) == CODEGEN_RADIX, "alphabet has %zu characters, radix %d", strlen(a),
          CODEGEN_RADIX);
    CHECK(strpbrk(a, "0O1IL") == NULL, "look-alike in alphabet: %s", a);
    CHECK(strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") == strlen(a), "not [A-Z0-9]");
    for (size_t i = 0; a[i]; i++) {
        CHECK(strchr(a + i + 1, a[i]) == NULL, "'%c' repeated", a[i]);
    }
}

static void
check_code(const char *code, size_t n, const char *prefix, int length)
{
    size_t plen = prefix && *prefix ? strlen(prefix) + 1 : 0;
    CHECK(n == strlen(code), "returned %zu, strlen %zu", n, strlen(code));
    CHECK(n == plen + (size_t)length, "'%s': length %zu, want %zu", code, n, plen + length);
    if (plen) {
        CHECK(strncmp(code, prefix, plen - 1) == 0 && code[plen - 1] == '-', "'%s': prefix", code);
    } else {
        CHECK(strchr(code, '-') == NULL, "'%s': dash without a prefix", code);
    }
    CHECK(strspn(code + plen, CODEGEN_ALPHABET) == (size_t)length, "'%s': outside alphabet", code);
}

static void
test_make_shapes(void)
{
    struct codegen_rng rng = {0};
    static const char *prefixes[] = {NULL, "", "A", "ABC", "Z9Z9Z9Z9"};
    static const int lengths[] = {1, 5, 12, 31, 32};
    for (size_t p = 0; p < ARRAY_SIZE(prefixes); p++) {
        for (size_t l = 0; l < ARRAY_SIZE(lengths); l++) {
            unsigned char buf[CODEGEN_MAX_CODE + 16];
            memset(buf, 0xaa, sizeof(buf));
            size_t n = codegen_make(&rng, prefixes[p], lengths[l], (char *)buf);
            check_code((char *)buf, n, prefixes[p], lengths[l]);
            CHECK(n < CODEGEN_MAX_CODE, "%zu characters do not fit CODEGEN_MAX_CODE", n);
            for (size_t k = n + 1; k < sizeof(buf); k++) {
                CHECK(buf[k] == 0xaa, "byte %zu past the NUL written", k);
                if (buf[k] != 0xaa) {
                    break;
                }
            }
        }
    }
    char out[CODEGEN_MAX_CODE];
    CHECK(codegen_make(&rng, "", 0, out) == 0 && out[0] == '\0', "length 0");
}

static int
cmp_codes(const void *a, const void *b)
{
    return strcmp(a, b);
}

enum { NCODES = 100000, CODELEN = 12 };

static void
test_unique_and_uniform(void)
{
    struct codegen_rng rng = {0};
    char(*codes)[CODELEN + 1] = xcalloc(NCODES, sizeof(*codes));
    long count[256] = {0}, first[256] = {0};
    for (int i = 0; i < NCODES; i++) {
        size_t n = codegen_make(&rng, "", CODELEN, codes[i]);
        if (n != CODELEN) {
            CHECK(0, "code %d has %zu characters", i, n);
            break;
        }
        for (int k = 0; k < CODELEN; k++) {
            count[(unsigned char)codes[i][k]]++;
        }
        first[(unsigned char)codes[i][0]]++;
    }
    qsort(codes, NCODES, sizeof(*codes), cmp_codes);
    int dups = 0;
    for (int i = 1; i < NCODES; i++) {
        dups += strcmp(codes[i - 1], codes[i]) == 0;
    }
    CHECK(dups == 0, "%d duplicate codes in %d", dups, NCODES);
    free(codes);

    /* 1.2M characters: 38710 per letter, sd 194; +-5% is 10 sd. */
    double expect = (double)NCODES * CODELEN / CODEGEN_RADIX;
    for (const char *c = CODEGEN_ALPHABET; *c; c++) {
        CHECK(count[(unsigned char)*c] > expect * 0.95 && count[(unsigned char)*c] < expect * 1.05,
              "'%c' drawn %ld times, expected about %.0f", *c, count[(unsigned char)*c], expect);
        CHECK(first[(unsigned char)*c] > NCODES / CODEGEN_RADIX * 0.85 &&
                  first[(unsigned char)*c] < NCODES / CODEGEN_RADIX * 1.15,
              "'%c' first %ld times", *c, first[(unsigned char)*c]);
        count[(unsigned char)*c] = 0;
    }
    for (int c = 0; c < 256; c++) {
        CHECK(count[c] == 0, "character 0x%02x drawn %ld times", c, count[c]);
    }
}

static void
test_two_pools_differ(void)
{
    struct codegen_rng a = {0}, b = {0};
    char ca[CODEGEN_MAX_CODE], cb[CODEGEN_MAX_CODE];
    codegen_make(&a, "", 32, ca);
    codegen_make(&b, "", 32, cb);
    CHECK(strcmp(ca, cb) != 0, "two pools gave the same code %s", ca);
    /* Many more bytes than one pool holds: refills keep working. */
    for (int i = 0; i < 2000; i++) {
        char c[CODEGEN_MAX_CODE];
        check_code(c, codegen_make(&a, "X", 32, c), "X", 32);
    }
}

static void
test_below(void)
{
    struct codegen_rng rng = {0};
    for (int i = 0; i < 1000; i++) {
        CHECK(codegen_below(&rng, 1) == 0, "bound 1");
    }
    long count[7] = {0};
    for (int i = 0; i < 70000; i++) {
        uint64_t r = codegen_below(&rng, 7);
        CHECK(r < 7, "%llu >= 7", (unsigned long long)r);
        if (r < 7) {
            count[r]++;
        }
    }
    for (int i = 0; i < 7; i++) {
        CHECK(count[i] > 9000 && count[i] < 11000, "value %d drawn %ld times", i, count[i]);
    }
    const uint64_t big = (1ULL << 63) + 1;
    int upper = 0;
    for (int i = 0; i < 2000; i++) {
        uint64_t r = codegen_below(&rng, big);
        CHECK(r < big, "%llu >= 2^63+1", (unsigned long long)r);
        upper += r >= big / 2;
    }
    CHECK(upper > 850 && upper < 1150, "upper half %d of 2000", upper);
}

struct reward_case {
    long long min, max, step;
    long long top; /* the largest reachable value */
};

static void
test_reward(void)
{
    static const struct reward_case cases[] = {
        {10, 100, 5, 100}, {1, 3, 1, 3}, {0, 10, 3, 9}, /* max off the grid: the grid stops below it */
        {7, 7, 1, 7},      {7, 7, 5, 7}, {-5, 5, 5, 5}, {1000, 50000, 1000, 50000}, {1, 2, 1, 2},
    };
    struct codegen_rng rng = {0};
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        const struct reward_case *c = &cases[i];
        long long values = (c->top - c->min) / c->step + 1;
        long seen_min = 0, seen_top = 0;
        int draws = (int)(values * 200);
        for (int d = 0; d < draws; d++) {
            long long r = codegen_reward(&rng, c->min, c->max, c->step);
            if (r < c->min || r > c->max || (r - c->min) % c->step != 0) {
                CHECK(0, "[%lld,%lld] step %lld: drew %lld", c->min, c->max, c->step, r);
                break;
            }
            seen_min += r == c->min;
            seen_top += r == c->top;
        }
        /* Each end is expected draws/values = 200 times; 100 is far below any bad luck. */
        CHECK(seen_min > 100 && seen_top > 100, "[%lld,%lld] step %lld: min %ld, top %ld times",
              c->min, c->max, c->step, seen_min, seen_top);
    }
    /* The widest range the chance role allows stays in bounds. */
    for (int d = 0; d < 10000; d++) {
        long long r = codegen_reward(&rng, 1, JSON_MAX_SAFE_INT, 1);
        CHECK(r >= 1 && r <= JSON_MAX_SAFE_INT, "wide range drew %lld", r);
        r = codegen_reward(&rng, 1, JSON_MAX_SAFE_INT, 1000000007LL);
        CHECK(r >= 1 && r <= JSON_MAX_SAFE_INT && (r - 1) % 1000000007LL == 0, "wide step %lld", r);
    }
}

static void
test_normalise(void)
{
    static const struct {
        const char *in;
        int rc;
        const char *out;
    } cases[] = {
        {"abc-def", 0, "ABC-DEF"},
        {"  abc-def  ", 0, "ABC-DEF"},
        {"\tXyZ\t", 0, "XYZ"},
        {"23456789", 0, "23456789"},
        {"lol-0i1", 0, "LOL-0I1"}, /* prefix letters may include look-alikes */
        {"", -1, NULL},
        {"   ", -1, NULL},
        {"ab cd", -1, NULL},
        {"abc!", -1, NULL},
        {"abc_def", -1, NULL},
        {"abc.def", -1, NULL},
        {"\xc3\xa9", -1, NULL},
        {"ab\ncd", -1, NULL},
        {"abc\n", -1, NULL},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        char out[CODEGEN_MAX_CODE];
        strcpy(out, "untouched");
        int rc = codegen_normalise(cases[i].in, out, sizeof(out));
        CHECK(rc == cases[i].rc, "'%s': rc %d", cases[i].in, rc);
        if (rc == 0 && cases[i].out) {
            CHECK(strcmp(out, cases[i].out) == 0, "'%s' -> '%s', want '%s'", cases[i].in, out,
                  cases[i].out);
        }
    }
    /* outsize bounds the result, terminator included. */
    char out[8];
    memset(out, 'X', sizeof(out));
    CHECK(codegen_normalise("abcdefg", out, 8) == 0 && strcmp(out, "ABCDEFG") == 0, "7 in 8");
    CHECK(codegen_normalise("abcdefgh", out, 8) == -1, "8 in 8 accepted");
    CHECK(codegen_normalise("  abcdefg  ", out, 8) == 0, "padding counted against outsize");
    /* Every generated code normalises to itself, also typed in lowercase with spaces. */
    struct codegen_rng rng = {0};
    for (int i = 0; i < 1000; i++) {
        char code[CODEGEN_MAX_CODE], typed[CODEGEN_MAX_CODE + 4], norm[CODEGEN_MAX_CODE];
        codegen_make(&rng, i % 2 ? "PRE" : "", 12, code);
        snprintf(typed, sizeof(typed), " %s ", code);
        for (char *p = typed; *p; p++) {
            *p = (char)(i % 3 ? *p : (*p >= 'A' && *p <= 'Z' ? *p + 32 : *p));
        }
        CHECK(codegen_normalise(typed, norm, sizeof(norm)) == 0 && strcmp(norm, code) == 0,
              "'%s' -> '%s', want '%s'", typed, norm, code);
    }
}

static void
test_prefix(void)
{
    static const struct {
        const char *in;
        int rc;
        const char *out;
    } cases[] = {
        {"abc", 0, "ABC"},       {"A", 0, "A"},     {"Ab3dEf7H", 0, "AB3DEF7H"}, {"", -1, NULL},
        {"abcdefghi", -1, NULL}, {"a-b", -1, NULL}, {"a b", -1, NULL},           {" ab", -1, NULL},
        {"\xc3\xa9", -1, NULL},  {"ab_", -1, NULL},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        char out[CODEGEN_MAX_PREFIX + 1];
        int rc = codegen_prefix(cases[i].in, out);
        CHECK(rc == cases[i].rc, "'%s': rc %d", cases[i].in, rc);
        if (rc == 0 && cases[i].out) {
            CHECK(strcmp(out, cases[i].out) == 0, "'%s' -> '%s'", cases[i].in, out);
        }
    }
}

static void
test_sparse(void)
{
    /* 31^5 = 28 629 151: up to 28 codes keep one in a million of the space. */
    CHECK(codegen_sparse_enough(28, 5), "28 of 31^5");
    CHECK(!codegen_sparse_enough(29, 5), "29 of 31^5");
    CHECK(codegen_sparse_enough(0, 1), "none");
    CHECK(!codegen_sparse_enough(1, 1), "1 of 31");
    /* The role's shortest codes, 12 characters: 31^12 / 1e6 is about 7.9e11. */
    CHECK(codegen_sparse_enough(7.8e11, 12), "7.8e11 of 31^12");
    CHECK(!codegen_sparse_enough(8.0e11, 12), "8e11 of 31^12");
    CHECK(codegen_sparse_enough(1e30, 32), "1e30 of 31^32");
    double space = pow(CODEGEN_RADIX, 12);
    CHECK(codegen_sparse_enough(space / 1e6, 12), "exactly one millionth");
}

static const struct test_case cases[] = {
    {"alphabet", test_alphabet},
    {"make_shapes", test_make_shapes},
    {"unique_and_uniform", test_unique_and_uniform},
    {"two_pools_differ", test_two_pools_differ},
    {"below", test_below},
    {"reward", test_reward},
    {"normalise", test_normalise},
    {"prefix", test_prefix},
    {"sparse", test_sparse},
};

HARNESS_MAIN("codegen", cases)
