/*
 * Unit tests of claim ids with a tag (claimid.h): the same user and key give the same id, the
 * tag binds the id to its user and to the secret, and anything else is refused.
 */
#include <stdio.h>
#include <string.h>

#include "claimid.h"
#include "harness.h"

static const char secret[] = "0123456789abcdef0123456789abcdef";
#define S secret, sizeof(secret) - 1

static void
test_deterministic_per_user_and_key(void)
{
    char a[CLAIMID_LEN + 1], b[CLAIMID_LEN + 1], c[CLAIMID_LEN + 1], d[CLAIMID_LEN + 1];
    claimid_make(S, 7, "key-1", a);
    claimid_make(S, 7, "key-1", b);
    claimid_make(S, 7, "key-2", c);
    claimid_make(S, 8, "key-1", d);
    CHECK(strlen(a) == CLAIMID_LEN, "%zu", strlen(a));
    CHECK(strspn(a, "0123456789abcdef") == CLAIMID_LEN, "%s", a);
    CHECK(strcmp(a, b) == 0, "%s %s", a, b);
    CHECK(strcmp(a, c) != 0 && strcmp(a, d) != 0, "%s %s %s", a, c, d);
    CHECK(claimid_verify(S, a, 7), "%s", a);
    CHECK(claimid_verify(S, d, 8), "%s", d);
}

static void
test_random_without_a_key(void)
{
    char a[CLAIMID_LEN + 1], b[CLAIMID_LEN + 1];
    claimid_make(S, 7, NULL, a);
    claimid_make(S, 7, NULL, b);
    CHECK(strcmp(a, b) != 0, "two random ids are equal: %s", a);
    CHECK(claimid_verify(S, a, 7) && claimid_verify(S, b, 7), "%s %s", a, b);
}

static void
test_tag_binds_user_and_secret(void)
{
    char a[CLAIMID_LEN + 1];
    claimid_make(S, 7, "k", a);
    CHECK(!claimid_verify(S, a, 8), "another user's id verified");
    CHECK(!claimid_verify("another secret", 14, a, 7), "verified under another secret");
    /* every single changed digit is refused */
    for (int i = 0; i < CLAIMID_LEN; i++) {
        char forged[CLAIMID_LEN + 1];
        memcpy(forged, a, sizeof(forged));
        forged[i] = forged[i] == '0' ? '1' : '0';
        CHECK(!claimid_verify(S, forged, 7), "digit %d changed and still verified", i);
    }
}

static void
test_malformed_ids(void)
{
    char a[CLAIMID_LEN + 1], upper[CLAIMID_LEN + 1];
    claimid_make(S, 7, "k", a);
    memcpy(upper, a, sizeof(upper));
    for (int i = 0; upper[i]; i++) {
        if (upper[i] >= 'a' && upper[i] <= 'f') {
            upper[i] = (char)(upper[i] - 'a' + 'A');
        }
    }
    const char *bad[] = {"", "abc", "forged-claim-id", upper};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(!claimid_verify(S, bad[i], 7), "'%s' verified", bad[i]);
    }
    char longer[CLAIMID_LEN + 2];
    snprintf(longer, sizeof(longer), "%s0", a);
    CHECK(!claimid_verify(S, longer, 7), "a longer id verified");
    CHECK(!claimid_verify(S, a + 1, 7), "a shorter id verified");
}

static const struct test_case cases[] = {
    {"deterministic_per_user_and_key", test_deterministic_per_user_and_key},
    {"random_without_a_key", test_random_without_a_key},
    {"tag_binds_user_and_secret", test_tag_binds_user_and_secret},
    {"malformed_ids", test_malformed_ids},
};

HARNESS_MAIN("claimid", cases)
