/*
 * Redis Cluster arithmetic for the chance role's own router (hiredis 0.14 has no cluster
 * support and Debian packages no cluster client for it): the key -> slot function (CRC16 with
 * hash tags, as the Redis Cluster specification defines it), MOVED/ASK redirection errors, and
 * the CLUSTER SLOTS reply turned into a slot map. Pure functions over hiredis reply objects;
 * no I/O; unit-tested and fuzzed.
 */
#ifndef CHANCED_CHANCE_CLUSTER_H
#define CHANCED_CHANCE_CLUSTER_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define CLUSTER_SLOTS 16384
#define CLUSTER_HOST_MAX 255
#define CLUSTER_MAX_NODES 256

/* CRC16-CCITT (XModem), the checksum Redis Cluster hashes keys with. */
uint16_t cluster_crc16(const char *buf, size_t len);
/* The slot of a key: of its hash tag ("{...}", non-empty, the first one) if it has one. */
int cluster_slot(const char *key, size_t len);

struct cluster_redirect {
    bool ask;                        /* ASK (one command) rather than MOVED (for good) */
    int slot;                        /* the slot named */
    char host[CLUSTER_HOST_MAX + 1]; /* the node that serves it */
    int port;
};

/* Parses an error reply "MOVED <slot> <host>:<port>" or "ASK ..." (IPv6 hosts as printed by
 * Redis, e.g. "::1:7000": the port follows the last ':'). -1 if it is neither. */
int cluster_parse_redirect(const char *err, size_t len, struct cluster_redirect *out) MUSTCHECK;

struct cluster_node {
    char host[CLUSTER_HOST_MAX + 1]; /* as announced by the cluster */
    int port;
};

struct cluster_map {
    struct cluster_node nodes[CLUSTER_MAX_NODES]; /* masters, in order of appearance */
    size_t nnodes;
    int16_t slot_node[CLUSTER_SLOTS]; /* node index per slot, -1 if unserved */
};

/*
 * Builds a map from a CLUSTER SLOTS reply (masters only; replicas are for failover, which the
 * cluster announces by a later map). An empty host means "the node that answered": seed_host
 * replaces it. -1 if the reply has an unexpected shape; a map with unserved slots is still 0
 * (cluster_map_complete says whether every slot is covered).
 */
int cluster_map_parse(const redisReply *reply, const char *seed_host,
                      struct cluster_map *out) MUSTCHECK;
/* True if every slot is served by some node. */
bool cluster_map_complete(const struct cluster_map *map);
/* Index of host:port in map (adding it if absent and room is left); -1 when full. */
int cluster_map_node(struct cluster_map *map, const char *host, int port);

#endif
