/*
 * Unit tests of client address parsing (clientaddr.h): canonical forms, what is refused, the
 * right-most X-Forwarded-For entry across lines, and IPv6 /64 buckets.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "clientaddr.h"
#include "harness.h"

static void
test_parse(void)
{
    static const struct {
        const char *in, *want; /* want NULL: refused */
    } cases[] = {
        {"192.0.2.1", "192.0.2.1"},
        {"  192.0.2.1\t", "192.0.2.1"},
        {"2001:DB8::1", "2001:db8::1"},
        {"2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"},
        {"[2001:db8::1]", "2001:db8::1"},
        {"::ffff:198.51.100.7", "198.51.100.7"},
        {"::1", "::1"},
        {"", NULL},
        {"   ", NULL},
        {"unknown", NULL},
        {"192.0.2.1:8080", NULL},
        {"[2001:db8::1]:443", NULL},
        {"[192.0.2.1]", NULL},
        {"192.0.2", NULL},
        {"192.0.2.256", NULL},
        {"1.2.3.4.5", NULL},
        {"fe80::1%eth0", NULL},
        {"2001:db8::1 2001:db8::2", NULL},
        {"example.com", NULL},
        {"1.2.3.4\r\nX: y", NULL},
        {"::ffff:1.2.3.4:80", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[CLIENTADDR_MAX] = "untouched";
        int rc = clientaddr_parse(cases[i].in, strlen(cases[i].in), out, sizeof(out));
        if (cases[i].want) {
            CHECK(rc == 0 && strcmp(out, cases[i].want) == 0, "%s -> rc=%d %s", cases[i].in, rc,
                  out);
        } else {
            CHECK(rc == -1, "%s accepted as %s", cases[i].in, out);
        }
    }
    /* A NUL inside the given length is refused, not cut short. */
    CHECK(clientaddr_parse("1.2.3.4\0junk", 12, (char[CLIENTADDR_MAX]){0}, CLIENTADDR_MAX) == -1,
          "NUL");
    /* Too small an output buffer is an error, never a truncated address. */
    char small[8];
    CHECK(clientaddr_parse("192.0.2.123", 11, small, sizeof(small)) == -1, "small buffer");
}

static void
test_forwarded(void)
{
    static const struct {
        const char *lines[3];
        size_t n;
        const char *want;
    } cases[] = {
        {{"198.51.100.7"}, 1, "198.51.100.7"},
        {{"203.0.113.9, 198.51.100.7"}, 1, "198.51.100.7"},
        {{"203.0.113.9,198.51.100.7"}, 1, "198.51.100.7"},
        {{"1.1.1.1, 2.2.2.2", "3.3.3.3"}, 2, "3.3.3.3"},         /* right-most across lines */
        {{"1.1.1.1", "2.2.2.2, 2001:db8::7"}, 2, "2001:db8::7"}, /* ... whatever the family */
        {{"9.9.9.9", "garbage"}, 2, NULL},                       /* never the spoofable left */
        {{"9.9.9.9, "}, 1, NULL},
        {{"9.9.9.9", ""}, 2, NULL},
        {{"9.9.9.9, unknown"}, 1, NULL},
        {{"9.9.9.9, 198.51.100.7:4711"}, 1, NULL},
        {{"[2001:db8::7]"}, 1, "2001:db8::7"},
        {{""}, 0, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[CLIENTADDR_MAX] = "untouched";
        int rc = clientaddr_forwarded(cases[i].lines, cases[i].n, out, sizeof(out));
        if (cases[i].want) {
            CHECK(rc == 0 && strcmp(out, cases[i].want) == 0, "case %zu -> rc=%d %s", i, rc, out);
        } else {
            CHECK(rc == -1, "case %zu accepted as %s", i, out);
        }
    }
}

static void
test_bucket(void)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"192.0.2.1", "192.0.2.1"},
        {"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
        {"2001:db8:1:2::ffff", "2001:db8:1:2::/64"},
        {"2001:db8:1:3::1", "2001:db8:1:3::/64"},
        {"::1", "::/64"},
        {"::ffff:192.0.2.1", "192.0.2.1"},
        {"nope", NULL},
        {"2001:db8::/64", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[CLIENTADDR_MAX] = "untouched";
        int rc = clientaddr_bucket(cases[i].in, out, sizeof(out));
        if (cases[i].want) {
            CHECK(rc == 0 && strcmp(out, cases[i].want) == 0, "%s -> rc=%d %s", cases[i].in, rc,
                  out);
        } else {
            CHECK(rc == -1, "%s accepted as %s", cases[i].in, out);
        }
    }
    /* The longest /64 key fits CLIENTADDR_MAX. */
    char out[CLIENTADDR_MAX];
    CHECK(clientaddr_bucket("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", out, sizeof(out)) == 0 &&
              strcmp(out, "ffff:ffff:ffff:ffff::/64") == 0,
          "%s", out);
}

static void
test_sockaddr(void)
{
    struct sockaddr_in in4 = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.2", &in4.sin_addr);
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:10.0.0.1", &in6.sin6_addr);
    char out[CLIENTADDR_MAX];
    CHECK(clientaddr_from_sockaddr((struct sockaddr *)&in4, out, sizeof(out)) == 0 &&
              strcmp(out, "127.0.0.2") == 0,
          "%s", out);
    CHECK(clientaddr_from_sockaddr((struct sockaddr *)&in6, out, sizeof(out)) == 0 &&
              strcmp(out, "10.0.0.1") == 0,
          "%s", out);
    struct sockaddr un = {.sa_family = AF_UNIX};
    CHECK(clientaddr_from_sockaddr(&un, out, sizeof(out)) == -1, "AF_UNIX");
}

static const struct test_case cases[] = {
    {"parse", test_parse},
    {"forwarded", test_forwarded},
    {"bucket", test_bucket},
    {"sockaddr", test_sockaddr},
};

HARNESS_MAIN("clientaddr", cases)
