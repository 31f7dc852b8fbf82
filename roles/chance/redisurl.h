/*
 * The one parser of redis_url, used by every Redis connection of the chance role (claims,
 * queries, generation and the audit relay alike, so they can never authenticate differently):
 *
 *   redis://[[user][:password]@]host[:port][,host[:port]...][/db]     plain TCP
 *   rediss://...                                                      TLS
 *   unix:///path/to/socket[?db=N]                                     local socket
 *
 * User and password may be percent-encoded (a password holding '@', ':' or '/' must be:
 * %40, %3A, %2F). Several hosts are seed nodes of a Redis Cluster (the first that answers gives
 * the slot map) or, for a plain server, alternatives tried in order. Pure functions; no I/O.
 */
#ifndef CHANCED_CHANCE_REDISURL_H
#define CHANCED_CHANCE_REDISURL_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

#define REDISURL_MAX_HOSTS 16
#define REDISURL_HOST_MAX 255

struct redisurl_host {
    char host[REDISURL_HOST_MAX + 1]; /* name or IP literal (without IPv6 brackets) */
    int port;                         /* default 6379 */
};

struct redisurl {
    bool tls;                                       /* rediss:// */
    char *user;                                     /* owned ACL user, or NULL (default user) */
    char *password;                                 /* owned, or NULL: no AUTH */
    int db;                                         /* SELECT db (0: none; refused in a cluster) */
    char *path;                                     /* owned unix socket path, or NULL */
    struct redisurl_host hosts[REDISURL_MAX_HOSTS]; /* seed nodes (none for a unix socket) */
    size_t nhosts;
};

/* Parses url into u (zeroed first). -1 with err (never showing the password) if invalid. */
int redisurl_parse(const char *url, struct redisurl *u, char *err, size_t errlen) MUSTCHECK;
/* Frees what redisurl_parse allocated, wiping the password. */
void redisurl_cleanup(struct redisurl *u);

#endif
