/*
 * Unit tests of the in-process token buckets (ratelimit.h). Client address keys (IPv6 by /64)
 * are clientaddr.c's, tested in test_clientaddr.c.
 */
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "ratelimit.h"

static void
test_burst_then_wait(void)
{
    struct ratelimit *rl = ratelimit_new(1.0 / 60.0, 3, 100);
    for (int i = 0; i < 3; i++) {
        CHECK(ratelimit_take(rl, "a") == 0, "take %d refused", i);
    }
    int wait = ratelimit_take(rl, "a");
    CHECK(wait >= 59 && wait <= 60, "wait %d", wait);
    CHECK(ratelimit_take(rl, "b") == 0, "another key shares the bucket");
    ratelimit_refund(rl, "a");
    CHECK(ratelimit_take(rl, "a") == 0, "refund did not give a token back");
    ratelimit_free(rl);
}

static const struct test_case cases[] = {
    {"burst_then_wait", test_burst_then_wait},
};

HARNESS_MAIN("ratelimit", cases)
