/*
 * Private to the Redis client (redis.c: batches, routing, replies; redis_node.c: connections,
 * handshake, the cluster slot map and health checks): the shared structures.
 */
#ifndef CHANCED_CHANCE_REDIS_INT_H
#define CHANCED_CHANCE_REDIS_INT_H

#include <event2/bufferevent.h>
#include <hiredis/hiredis.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

#include "backoff.h"
#include "cluster.h"
#include "redis.h"
#include "redisurl.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define TICK_MS 100            /* health checks and retries */
#define PING_IDLE_MS 1000      /* an idle node is pinged this often */
#define REFRESH_MIN_MS 250     /* slot map refreshes at most this often */
#define REFRESH_EVERY_MS 10000 /* and at least this often in a cluster */
#define RETRY_DELAY_MS 50      /* TRYAGAIN, CLUSTERDOWN, LOADING: try again after this */
#define MAX_REDIRECTS 5        /* MOVED/ASK hops of one command */
#define MAX_NODES 64

enum node_state {
    NODE_DOWN,       /* no connection (waiting for a retry, or unused) */
    NODE_CONNECTING, /* TCP (and TLS) connect under way */
    NODE_HANDSHAKE,  /* AUTH, CLUSTER SLOTS, SELECT, SCRIPT LOAD in flight */
    NODE_UP,         /* serving commands */
};

enum mode {
    MODE_UNKNOWN,    /* no seed answered yet */
    MODE_STANDALONE, /* a single server */
    MODE_CLUSTER,    /* a Redis Cluster: redis_route by slot */
};

struct rnode;
struct bcmd;

/* Called with the reply of an internal request, or NULL when the node failed first. */
typedef void (*internal_fn)(struct rnode *n, const redisReply *reply, void *arg);

/* A command written to a node whose reply is awaited (FIFO per node). */
struct rreq {
    struct rreq *next; /* queue link */
    struct bcmd *cmd;  /* a batch's command, or NULL */
    internal_fn fn;    /* internal requests: the callback (NULL: ignore the reply) */
    void *arg;         /* its argument */
    int64_t sent_ms;   /* monotonic time it was written */
};

struct rnode {
    struct redis *r;                  /* borrowed back-pointer */
    char host[REDISURL_HOST_MAX + 1]; /* TCP host, "" for the unix socket */
    int port;
    enum node_state state;
    struct bufferevent *bev;            /* owned while not DOWN */
    redisReader *reader;                /* owned while not DOWN */
    struct rreq *sent_head, *sent_tail; /* awaiting replies, oldest first */
    struct bcmd *wait_head, *wait_tail; /* batch commands waiting for this node to be UP */
    struct event *retry;                /* reconnect timer */
    struct backoff bo;                  /* reconnect pacing and failure logs */
    bool mapped;                        /* a master of the current slot map */
    bool seed;                          /* named by redis_url */
    int64_t last_io_ms;                 /* last write or reply */
};

/* One command of a batch, kept until its reply so NOSCRIPT, MOVED and ASK can resend it. */
struct bcmd {
    struct redis_batch *b; /* owner */
    int index;             /* position in the reply array */
    int script;            /* script id for EVALSHA commands, else -1 */
    int argc;
    char **argv; /* owned copies */
    size_t *lens;
    int slot;                   /* slot of its key, -1 if keyless */
    int redirects;              /* MOVED/ASK hops so far */
    bool ask;                   /* send ASKING first (one ASK redirection) */
    bool done;                  /* finished: reply stored or given up */
    bool in_flight;             /* written to a node, reply awaited */
    struct rnode *wait_node;    /* node whose wait queue holds it, or NULL */
    struct rnode *ask_node;     /* the ASK target, or NULL */
    struct bcmd *wnext, *wprev; /* wait-queue links */
    struct bcmd *rnext;         /* retry-list link */
    int64_t retry_at;           /* when to try again (monotonic ms), while on the retry list */
};

struct redis_batch {
    struct redis *r;   /* borrowed */
    struct bcmd *cmds; /* owned */
    int ncmds, cap;
    int outstanding; /* commands not done yet */
    int sent;        /* commands written at least once */
    cJSON **replies; /* slot per command */
    redis_done_fn done;
    void *arg;
    struct event *timer; /* deadline, or the next-turn finish of an unsendable batch */
    bool finished;       /* done has been called */
};

struct redis {
    struct loop *loop;   /* borrowed */
    struct redisurl url; /* parsed redis_url (owned) */
    int timeout_ms;
    SSL_CTX *tls;               /* owned, rediss:// only */
    const char *const *scripts; /* borrowed sources */
    char (*shas)[41];           /* hex SHA-1 per script */
    size_t nscripts;
    enum mode mode;
    struct rnode *nodes[MAX_NODES]; /* owned */
    size_t nnodes;
    size_t next_seed;                       /* standalone: seed tried next */
    struct cluster_map *map;                /* owned, cluster mode */
    struct rnode *slot_node[CLUSTER_SLOTS]; /* borrowed per slot, cluster mode */
    bool map_complete;                      /* every slot served */
    bool refreshing;                        /* CLUSTER SLOTS in flight */
    int64_t refreshed_ms;                   /* last refresh request */
    struct bcmd *retry_head;                /* commands to resend after RETRY_DELAY_MS */
    struct event *tick;                     /* health, pings, retries, refreshes */
    bool was_ready;                         /* readiness at the last check */
    void (*ready_fn)(void *arg);
    void *ready_arg;
    bool freeing;
};

/* redis_node.c */
void redis_node_connect(struct rnode *n);
/* Drops the connection: commands written complete with no reply (unknown outcome), parked ones
 * stay parked, a reconnect is scheduled. */
void redis_node_fail(struct rnode *n, const char *why);
struct rnode *redis_node_add(struct redis *r, const char *host, int port, bool seed);
/* The node for host:port, created (and connecting) if new; NULL when the table is full. */
struct rnode *redis_node_get(struct redis *r, const char *host, int port);
void redis_refresh_map(struct redis *r, bool force);
void redis_check_ready(struct redis *r);
void redis_on_tick(evutil_socket_t fd, short what, void *arg);

/* redis.c */
/* Hands a reply (NULL: the node failed) to whoever asked; frees q. */
void redis_dispatch(struct rnode *n, struct rreq *q, const redisReply *rep);
/* Sends a command to the node that serves it now, or parks it until that node is up. */
void redis_route(struct bcmd *c);
void redis_wait_unlink(struct bcmd *c);
struct rnode *redis_target_node(struct redis *r, const struct bcmd *c);
/* Writes an internal command (handshake, PING, CLUSTER SLOTS) to n. */
void redis_node_internal(struct rnode *n, internal_fn fn, void *arg, int argc, const char **argv,
                         const size_t *lens);

#endif
