/*
 * The chance role's Redis client, on the role's libevent loop: hiredis' reader and command
 * formatter over libevent bufferevents (plain TCP, TLS for rediss://, or a unix socket), so one
 * client serves a single server and a Redis Cluster alike.
 *
 * - Batches: pipelined commands whose replies arrive together as one cJSON array.
 * - Lua scripts by EVALSHA with a transparent EVAL on NOSCRIPT (and SCRIPT LOAD on connect).
 * - Cluster: detected at connect (CLUSTER SLOTS answers), commands routed by the slot of their
 *   key to the master that serves it (one connection per master), MOVED/ASK followed, the slot
 *   map refreshed after a redirect or a lost node, TRYAGAIN/CLUSTERDOWN retried briefly.
 * - Health: a node whose oldest command waits longer than timeout_ms (a hung or partitioned
 *   server) is dropped at once: every command pending on it completes as REDIS_TIMEOUT (outcome
 *   unknown), the client reports not-ready and reconnects with backoff. An idle node is pinged
 *   every second, so a hang is noticed without traffic too.
 *
 * Reply mapping: status/string -> string, integer -> number, nil -> null, array -> array,
 * error -> {"error": "<message>"}.
 */
#ifndef CHANCED_CHANCE_REDIS_H
#define CHANCED_CHANCE_REDIS_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "util.h"

struct loop;
struct redis;
struct redis_batch;

enum redis_status {
    REDIS_DONE,        /* every reply arrived (each may still be an error reply) */
    REDIS_UNAVAILABLE, /* no node to send to: nothing of the batch was sent */
    REDIS_TIMEOUT,     /* sent, but no complete answer in time (or the link dropped): unknown */
};

/*
 * Called once per batch on the loop thread. replies is an array with one item per command in
 * order (owned by the callee: free it with cJSON_Delete) for REDIS_DONE, NULL otherwise.
 */
typedef void (*redis_done_fn)(enum redis_status status, cJSON *replies, void *arg);

struct redis_opts {
    const char *url;            /* redis_url (redisurl.h) */
    int timeout_ms;             /* connect and command deadline */
    const char *tls_ca;         /* rediss://: CA file ("" = system store) */
    const char *tls_cert;       /* rediss://: client certificate ("" = none) */
    const char *tls_key;        /* its key: path or PEM text */
    const char *const *scripts; /* Lua sources (static), loaded on every node */
    size_t nscripts;
};

/* Parses the URL and starts connecting. NULL with err (no secrets in it) on a bad option. */
struct redis *redis_new(struct loop *loop, const struct redis_opts *opts, char *err, size_t errlen);
/* Fails every pending batch (REDIS_TIMEOUT if sent, REDIS_UNAVAILABLE if not) and frees. */
void redis_free(struct redis *r);
/* True when commands can be served: connected, scripts loaded, and in a cluster every slot
 * mapped to a connected master. */
bool redis_ready(const struct redis *r);
/* True once the server was found to be a Redis Cluster. */
bool redis_is_cluster(const struct redis *r);
/* Sets a callback run each time the client becomes ready (after a connect or a failover). */
void redis_on_ready(struct redis *r, void (*fn)(void *arg), void *arg);

/* Starts an empty batch. Every batch must be sent. */
struct redis_batch *redis_batch_new(struct redis *r);
/* Appends a command given as an argument vector (copied). */
void redis_batch_argv(struct redis_batch *b, int argc, const char **argv, const size_t *lens);
/* Appends a command in hiredis format syntax ("HGET %s %s"). */
void redis_batch_cmd(struct redis_batch *b, const char *fmt, ...);
/* Appends EVALSHA of script `id` with keys then args (copied). In a cluster, every key of one
 * script must hash to one slot. */
void redis_batch_script(struct redis_batch *b, int id, int nkeys, const char **keys, int nargs,
                        const char **args, const size_t *arglens);
/* Sends the batch; done fires exactly once, never before this returns. */
void redis_batch_send(struct redis_batch *b, redis_done_fn done, void *arg);

/* Helpers to read a reply array. */
bool redis_reply_is_error(const cJSON *reply);
const char *redis_reply_error(const cJSON *reply);

#endif
