/*
 * The chance role's Redis adapter: hiredis' async API on the role's libevent loop, batches of
 * pipelined commands whose replies arrive together as one cJSON array, Lua scripts by EVALSHA
 * with a transparent reload on NOSCRIPT, a deadline per batch, and reconnect with backoff.
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
    REDIS_UNAVAILABLE, /* not connected: nothing was sent */
    REDIS_TIMEOUT,     /* sent, but no complete answer in time (or the link dropped): unknown */
};

/*
 * Called once per batch on the loop thread. replies is an array with one item per command in
 * order (owned by the callee: free it with cJSON_Delete) for REDIS_DONE, NULL otherwise.
 */
typedef void (*redis_done_fn)(int status, cJSON *replies, void *arg);

/* Connects to url ("redis://[:pass@]host:port/db" or "unix:///path"); scripts are static. */
struct redis *redis_new(struct loop *loop, const char *url, int timeout_ms,
                        const char *const *scripts, size_t nscripts);
void redis_free(struct redis *r);
bool redis_connected(const struct redis *r);
/* Sets a callback run each time the connection is (re)established and scripts are loaded. */
void redis_on_ready(struct redis *r, void (*fn)(void *arg), void *arg);

/* Starts an empty batch. Every batch must be sent. */
struct redis_batch *redis_batch_new(struct redis *r);
/* Appends a command given as an argument vector (copied). */
void redis_batch_argv(struct redis_batch *b, int argc, const char **argv, const size_t *lens);
/* Appends a command in hiredis format syntax ("HGET %s %s"). */
void redis_batch_cmd(struct redis_batch *b, const char *fmt, ...);
/* Appends EVALSHA of script `id` with keys then args (copied). */
void redis_batch_script(struct redis_batch *b, int id, int nkeys, const char **keys, int nargs,
                        const char **args, const size_t *arglens);
/* Sends the batch; done fires exactly once, never before this returns. */
void redis_batch_send(struct redis_batch *b, redis_done_fn done, void *arg);

/* Helpers to read a reply array. */
bool redis_reply_is_error(const cJSON *reply);
const char *redis_reply_error(const cJSON *reply);

#endif
