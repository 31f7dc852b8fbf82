/* Unit tests of the Redis Cluster arithmetic: CRC16 vectors, hash tags, MOVED/ASK, slot maps. */
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "harness.h"

static int
slot(const char *key)
{
    return cluster_slot(key, strlen(key));
}

static void
test_crc16(void)
{
    /* The check value of CRC16/XMODEM, as quoted by the Redis Cluster specification. */
    CHECK(cluster_crc16("123456789", 9) == 0x31C3, "crc16 %04x", cluster_crc16("123456789", 9));
    CHECK(cluster_crc16("", 0) == 0, "empty");
    /* CLUSTER KEYSLOT answers of a real Redis 7. */
    CHECK(slot("foo") == 12182, "foo %d", slot("foo"));
    CHECK(slot("bar") == 5061, "bar %d", slot("bar"));
    CHECK(slot("hello") == 866, "hello %d", slot("hello"));
    CHECK(slot("somekey") == 11058, "somekey %d", slot("somekey"));
}

static void
test_hash_tags(void)
{
    CHECK(slot("{user1000}.following") == slot("{user1000}.followers"), "same tag");
    CHECK(slot("{user1000}.following") == slot("user1000"), "tag = key");
    CHECK(slot("foo{}{bar}") == cluster_crc16("foo{}{bar}", 10) % 16384, "empty tag: whole key");
    CHECK(slot("foo{{bar}}zap") == slot("{bar"), "first { to first }");
    CHECK(slot("foo{bar}{zap}") == slot("bar"), "first tag only");
    CHECK(slot("chance:{c42}:meta") == slot("chance:{c42}:free"), "a category is one slot");
    CHECK(slot("chance:{c42}:meta") != slot("chance:{c43}:meta"), "categories spread");
    CHECK(slot("no close {brace") == cluster_crc16("no close {brace", 15) % 16384, "unclosed");
}

static void
test_redirects(void)
{
    struct cluster_redirect r;
    const char *moved = "MOVED 3999 127.0.0.1:6381";
    CHECK(cluster_parse_redirect(moved, strlen(moved), &r) == 0, "moved");
    CHECK(!r.ask && r.slot == 3999 && strcmp(r.host, "127.0.0.1") == 0 && r.port == 6381,
          "moved fields %d %s %d", r.slot, r.host, r.port);
    const char *ask = "ASK 16383 ::1:7002";
    CHECK(cluster_parse_redirect(ask, strlen(ask), &r) == 0, "ask v6");
    CHECK(r.ask && r.slot == 16383 && strcmp(r.host, "::1") == 0 && r.port == 7002, "ask fields");
    const char *bad[] = {"MOVED",       "MOVED 3999",      "MOVED 16384 h:1", "MOVED x h:1",
                         "MOVED 1 h",   "MOVED 1 h:0",     "MOVED 1 h:65536", "MOVED 1 :80",
                         "ASK 1 h:12a", "ERR MOVED 1 h:1", "moved 1 h:1",     "MOVED  1 h:1",
                         "MOVED 1 h:"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        CHECK(cluster_parse_redirect(bad[i], strlen(bad[i]), &r) == -1, "accepted: %s", bad[i]);
    }
}

/* Builds a reply tree by hand, as hiredis' reader would. */
static redisReply *
rep(int type)
{
    redisReply *r = calloc(1, sizeof(*r));
    r->type = type;
    return r;
}

static redisReply *
mkint(long long v)
{
    redisReply *r = rep(REDIS_REPLY_INTEGER);
    r->integer = v;
    return r;
}

static redisReply *
rstr(const char *s)
{
    redisReply *r = rep(REDIS_REPLY_STRING);
    r->len = strlen(s);
    r->str = strdup(s);
    return r;
}

static redisReply *
rarr(size_t n, redisReply **items)
{
    redisReply *r = rep(REDIS_REPLY_ARRAY);
    r->elements = n;
    r->element = calloc(n ? n : 1, sizeof(*r->element));
    memcpy(r->element, items, n * sizeof(*items));
    return r;
}

static redisReply *
range(long long a, long long b, const char *host, long long port)
{
    redisReply *node[] = {rstr(host), mkint(port), rstr("id")};
    redisReply *replica[] = {rstr("10.0.0.9"), mkint(7009), rstr("rid")};
    redisReply *e[] = {mkint(a), mkint(b), rarr(3, node), rarr(3, replica)};
    return rarr(4, e);
}

static void
test_slot_map(void)
{
    struct cluster_map *map = malloc(sizeof(*map));
    redisReply *ranges[] = {range(0, 5460, "10.0.0.1", 7000), range(5461, 10922, "", 7001),
                            range(10923, 16383, "10.0.0.3", 7002)};
    redisReply *reply = rarr(3, ranges);
    CHECK(cluster_map_parse(reply, "seed.example", map) == 0, "parse");
    CHECK(map->nnodes == 3, "masters only: %zu", map->nnodes);
    CHECK(cluster_map_complete(map), "complete");
    CHECK(map->slot_node[0] == 0 && map->slot_node[5460] == 0 && map->slot_node[5461] == 1 &&
              map->slot_node[16383] == 2,
          "ranges");
    CHECK(strcmp(map->nodes[1].host, "seed.example") == 0, "empty host is the seed");
    CHECK(cluster_map_node(map, "10.0.0.3", 7002) == 2, "lookup");
    CHECK(cluster_map_node(map, "10.0.0.4", 7003) == 3 && map->nnodes == 4, "add");
    freeReplyObject(reply);

    redisReply *partial[] = {range(0, 100, "h", 1)};
    reply = rarr(1, partial);
    CHECK(cluster_map_parse(reply, "s", map) == 0 && !cluster_map_complete(map), "partial");
    freeReplyObject(reply);

    redisReply *badr[] = {range(200, 100, "h", 1)};
    reply = rarr(1, badr);
    CHECK(cluster_map_parse(reply, "s", map) == -1, "start > end accepted");
    freeReplyObject(reply);
    reply = rstr("ERR This instance has cluster support disabled");
    CHECK(cluster_map_parse(reply, "s", map) == -1, "string accepted");
    freeReplyObject(reply);
    free(map);
}

static const struct test_case cases[] = {
    {"crc16", test_crc16},
    {"hash_tags", test_hash_tags},
    {"redirects", test_redirects},
    {"slot_map", test_slot_map},
};

int
main(void)
{
    return harness_run("cluster", cases, ARRAY_SIZE(cases));
}
