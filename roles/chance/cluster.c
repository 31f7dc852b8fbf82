/* Redis Cluster slots, redirections and slot maps (cluster.h). */
#include "cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint16_t
cluster_crc16(const char *buf, size_t len)
{
    /* Bitwise CRC16-CCITT, polynomial 0x1021, initial 0: small, and fast enough for keys. */
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)buf[i] << 8);
        for (int b = 0; b < 8; b++) {
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
        }
    }
    return crc;
}

int
cluster_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t rest = len - (size_t)(open - key) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close && close > open + 1) {
            return cluster_crc16(open + 1, (size_t)(close - open - 1)) & (CLUSTER_SLOTS - 1);
        }
    }
    return cluster_crc16(key, len) & (CLUSTER_SLOTS - 1);
}

/* Parses "host:port" where host may itself hold ':' (IPv6): the port follows the last ':'. */
static int
split_endpoint(const char *s, size_t n, char *host, size_t hostsize, int *port)
{
    const char *colon = NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ':') {
            colon = s + i;
        }
    }
    if (colon == NULL || colon == s || (size_t)(colon - s) >= hostsize) {
        return -1;
    }
    size_t plen = (size_t)(s + n - colon - 1);
    if (plen == 0 || plen > 5 || strspn(colon + 1, "0123456789") < plen) {
        return -1;
    }
    int p = 0;
    for (size_t i = 0; i < plen; i++) {
        p = p * 10 + (colon[1 + i] - '0');
    }
    if (p < 1 || p > 65535) {
        return -1;
    }
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port = p;
    return 0;
}

int
cluster_parse_redirect(const char *err, size_t len, struct cluster_redirect *out)
{
    size_t skip;
    if (len > 6 && memcmp(err, "MOVED ", 6) == 0) {
        out->ask = false;
        skip = 6;
    } else if (len > 4 && memcmp(err, "ASK ", 4) == 0) {
        out->ask = true;
        skip = 4;
    } else {
        return -1;
    }
    const char *p = err + skip, *end = err + len;
    const char *space = memchr(p, ' ', (size_t)(end - p));
    if (space == NULL || space == p || space - p > 5) {
        return -1;
    }
    int slot = 0;
    for (const char *d = p; d < space; d++) {
        if (*d < '0' || *d > '9') {
            return -1;
        }
        slot = slot * 10 + (*d - '0');
    }
    if (slot >= CLUSTER_SLOTS) {
        return -1;
    }
    out->slot = slot;
    return split_endpoint(space + 1, (size_t)(end - space - 1), out->host, sizeof(out->host),
                          &out->port);
}

int
cluster_map_node(struct cluster_map *map, const char *host, int port)
{
    for (size_t i = 0; i < map->nnodes; i++) {
        if (map->nodes[i].port == port && strcmp(map->nodes[i].host, host) == 0) {
            return (int)i;
        }
    }
    if (map->nnodes == CLUSTER_MAX_NODES || strlen(host) > CLUSTER_HOST_MAX) {
        return -1;
    }
    struct cluster_node *n = &map->nodes[map->nnodes];
    snprintf(n->host, sizeof(n->host), "%s", host);
    n->port = port;
    return (int)map->nnodes++;
}

static bool
is_int(const redisReply *r, long long lo, long long hi)
{
    return r && r->type == REDIS_REPLY_INTEGER && r->integer >= lo && r->integer <= hi;
}

/* One [start, end, [host, port, id...], replicas...] entry. */
static int
parse_range(const redisReply *e, const char *seed_host, struct cluster_map *map)
{
    if (e == NULL || e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
        !is_int(e->element[0], 0, CLUSTER_SLOTS - 1) ||
        !is_int(e->element[1], e->element[0]->integer, CLUSTER_SLOTS - 1)) {
        return -1;
    }
    const redisReply *master = e->element[2];
    if (master == NULL || master->type != REDIS_REPLY_ARRAY || master->elements < 2 ||
        master->element[0] == NULL || master->element[0]->type != REDIS_REPLY_STRING ||
        !is_int(master->element[1], 1, 65535) || master->element[0]->len > CLUSTER_HOST_MAX ||
        memchr(master->element[0]->str, '\0', master->element[0]->len)) {
        return -1;
    }
    const char *host = master->element[0]->len ? master->element[0]->str : seed_host;
    int node = cluster_map_node(map, host, (int)master->element[1]->integer);
    if (node < 0) {
        return -1;
    }
    for (long long s = e->element[0]->integer; s <= e->element[1]->integer; s++) {
        map->slot_node[s] = (int16_t)node;
    }
    return 0;
}

int
cluster_map_parse(const redisReply *reply, const char *seed_host, struct cluster_map *out)
{
    out->nnodes = 0;
    for (int s = 0; s < CLUSTER_SLOTS; s++) {
        out->slot_node[s] = -1;
    }
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        return -1;
    }
    for (size_t i = 0; i < reply->elements; i++) {
        if (parse_range(reply->element[i], seed_host, out) != 0) {
            return -1;
        }
    }
    return 0;
}

bool
cluster_map_complete(const struct cluster_map *map)
{
    for (int s = 0; s < CLUSTER_SLOTS; s++) {
        if (map->slot_node[s] < 0) {
            return false;
        }
    }
    return true;
}
