/*
 * Unit tests of the in-process token buckets (ratelimit.h) and of the client address keys: an
 * IPv6 client stands for its /64, an IPv4-mapped one for its IPv4 address.
 */
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "ratelimit.h"

static void
expect_key(const char *addr, const char *want)
{
    char out[RATELIMIT_ADDR_MAX];
    ratelimit_addr_key(addr, out, sizeof(out));
    CHECK(strcmp(out, want) == 0, "%s -> %s, want %s", addr, out, want);
}

static void
test_addr_keys(void)
{
    expect_key("127.0.0.1", "127.0.0.1");
    expect_key("203.0.113.9", "203.0.113.9");
    expect_key("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64");
    expect_key("2001:db8:1:2::ffff", "2001:db8:1:2::/64");
    expect_key("2001:DB8:1:2:aaaa::1", "2001:db8:1:2::/64"); /* one spelling per /64 */
    expect_key("2001:db8:1:3::1", "2001:db8:1:3::/64");
    expect_key("::1", "::/64");
    expect_key("::ffff:198.51.100.7", "198.51.100.7");
    /* already a key, or not an address at all: unchanged */
    expect_key("2001:db8:1:2::/64", "2001:db8:1:2::/64");
    expect_key("-", "-");
    expect_key("", "");
    char small[8];
    ratelimit_addr_key("2001:db8:1:2::1", small, sizeof(small));
    CHECK(strlen(small) == sizeof(small) - 1, "%s", small); /* truncated, terminated */
}

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
    {"addr_keys", test_addr_keys},
    {"burst_then_wait", test_burst_then_wait},
};

HARNESS_MAIN("ratelimit", cases)
