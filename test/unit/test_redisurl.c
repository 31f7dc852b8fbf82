/* Unit tests of the one redis_url parser: forms, credentials, clusters, TLS, refusals. */
#include <string.h>

#include "harness.h"
#include "redisurl.h"

static void
test_forms(void)
{
    struct redisurl u;
    char err[256];
    CHECK(redisurl_parse("redis://127.0.0.1:6379/0", &u, err, sizeof(err)) == 0, "%s", err);
    CHECK(!u.tls && u.nhosts == 1 && strcmp(u.hosts[0].host, "127.0.0.1") == 0 &&
              u.hosts[0].port == 6379 && u.db == 0 && !u.user && !u.password,
          "plain");
    redisurl_cleanup(&u);
    CHECK(redisurl_parse("redis://localhost", &u, err, sizeof(err)) == 0 && u.hosts[0].port == 6379,
          "default port");
    redisurl_cleanup(&u);
    CHECK(redisurl_parse("rediss://cache.internal:6380/3", &u, err, sizeof(err)) == 0 && u.tls &&
              u.db == 3 && u.hosts[0].port == 6380,
          "tls");
    redisurl_cleanup(&u);
    CHECK(redisurl_parse("unix:///run/redis/redis.sock?db=2", &u, err, sizeof(err)) == 0 &&
              strcmp(u.path, "/run/redis/redis.sock") == 0 && u.db == 2 && u.nhosts == 0,
          "unix with db");
    redisurl_cleanup(&u);
    CHECK(redisurl_parse("redis://[::1]:7000", &u, err, sizeof(err)) == 0 &&
              strcmp(u.hosts[0].host, "::1") == 0 && u.hosts[0].port == 7000,
          "ipv6");
    redisurl_cleanup(&u);
}

static void
test_credentials(void)
{
    struct redisurl u;
    char err[256];
    CHECK(redisurl_parse("redis://chance:s3cret@h:1/", &u, err, sizeof(err)) == 0 &&
              strcmp(u.user, "chance") == 0 && strcmp(u.password, "s3cret") == 0,
          "acl user");
    redisurl_cleanup(&u);
    CHECK(redisurl_parse("redis://:pw@h", &u, err, sizeof(err)) == 0 && u.user == NULL &&
              strcmp(u.password, "pw") == 0,
          "password only");
    redisurl_cleanup(&u);
    CHECK(redisurl_parse("redis://pw@h", &u, err, sizeof(err)) == 0 && u.user == NULL &&
              strcmp(u.password, "pw") == 0,
          "bare password");
    redisurl_cleanup(&u);
    /* '@' in a password: encoded, or raw (the last '@' of the authority ends the user info). */
    CHECK(redisurl_parse("redis://u:p%40ss%3Aw%2Fd@h:1", &u, err, sizeof(err)) == 0 &&
              strcmp(u.password, "p@ss:w/d") == 0,
          "encoded");
    redisurl_cleanup(&u);
    CHECK(redisurl_parse("redis://u:p@ss@h:1/4", &u, err, sizeof(err)) == 0 &&
              strcmp(u.password, "p@ss") == 0 && strcmp(u.hosts[0].host, "h") == 0 && u.db == 4,
          "raw @");
    redisurl_cleanup(&u);
    CHECK(redisurl_parse("redis://u:bad%zz@h", &u, err, sizeof(err)) == -1, "bad escape");
    CHECK(strstr(err, "bad") != NULL && strstr(err, "zz") == NULL, "error shows the secret: %s",
          err);
    CHECK(redisurl_parse("redis://u:nul%00@h", &u, err, sizeof(err)) == -1, "encoded NUL");
}

static void
test_cluster_seeds(void)
{
    struct redisurl u;
    char err[256];
    CHECK(redisurl_parse("redis://:pw@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002/", &u, err,
                         sizeof(err)) == 0,
          "%s", err);
    CHECK(u.nhosts == 3 && u.hosts[1].port == 7001 && strcmp(u.hosts[2].host, "::1") == 0, "seeds");
    redisurl_cleanup(&u);
    CHECK(redisurl_parse("redis://a:1,,b:2", &u, err, sizeof(err)) == -1, "empty seed");
    CHECK(redisurl_parse("redis://a:1,", &u, err, sizeof(err)) == -1, "trailing comma");
}

static void
test_refusals(void)
{
    struct redisurl u;
    char err[256];
    const char *bad[] = {"http://h",      "redis://",     "redis://h:0",       "redis://h:70000",
                         "redis://h:x",   "redis://h/x",  "redis://h?a=b",     "unix://relative",
                         "unix:///s?x=1", "redis://[::1", "redis://h:1/99999", ""};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        CHECK(redisurl_parse(bad[i], &u, err, sizeof(err)) == -1, "accepted: %s", bad[i]);
    }
}

static const struct test_case cases[] = {
    {"forms", test_forms},
    {"credentials", test_credentials},
    {"cluster_seeds", test_cluster_seeds},
    {"refusals", test_refusals},
};

int
main(void)
{
    return harness_run("redisurl", cases, ARRAY_SIZE(cases));
}
