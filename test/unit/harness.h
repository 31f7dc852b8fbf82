/*
 * A minimal unit-test harness: CHECK counts failures without stopping, a case table runs each
 * test, and main prints "N passed, N failed" and exits non-zero on any failure.
 */
#ifndef CHANCED_TEST_HARNESS_H
#define CHANCED_TEST_HARNESS_H

#include <stdio.h>
#include <string.h>

static int harness_failures; /* failed CHECKs in the current case */

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            harness_failures++;                                                                    \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond);             \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

enum { PASS, FAIL, SKIP };

struct test_case {
    const char *name; /* printed on failure */
    void (*fn)(void); /* the test; uses CHECK */
};

static int
harness_run(const char *suite, const struct test_case *cases, size_t n)
{
    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        harness_failures = 0;
        cases[i].fn();
        if (harness_failures) {
            failed++;
            fprintf(stderr, "FAIL %s.%s\n", suite, cases[i].name);
        } else {
            passed++;
        }
    }
    printf("%s: %d passed, %d failed\n", suite, passed, failed);
    return failed ? 1 : 0;
}

#define HARNESS_MAIN(suite, cases)                                                                 \
    int main(void)                                                                                 \
    {                                                                                              \
        return harness_run(suite, cases, sizeof(cases) / sizeof(cases[0]));                        \
    }

#endif
