/*
 * RPC client over the NestJS TCP transport: one connection, many requests in flight matched by
 * id, a deadline per call, reconnect with exponential backoff. Used by the gateway for chance
 * and logger.
 */
#ifndef CHANCED_RPC_CLIENT_H
#define CHANCED_RPC_CLIENT_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "util.h"

struct loop;
struct rpc_client;

enum rpc_status {
    RPC_OK,          /* final response; result is the response */
    RPC_PARTIAL,     /* a stream item; more follow */
    RPC_ERROR,       /* the remote handler answered with an error; result is err */
    RPC_TIMEOUT,     /* sent, no final answer before the deadline: outcome unknown */
    RPC_LOST,        /* sent, then the connection dropped: outcome unknown */
    RPC_UNAVAILABLE, /* never sent (not connected): nothing happened remotely */
};

/* Reply callback, on the loop thread. result is borrowed until return; NULL on failures. */
typedef void (*rpc_reply_fn)(int status, const cJSON *result, void *arg);

/* Creates a client for "host:port" and starts connecting. */
struct rpc_client *rpc_client_new(struct loop *loop, const char *addr, size_t max_frame);
/* Fails every call still pending (RPC_LOST if sent, RPC_UNAVAILABLE if not) and frees. */
void rpc_client_free(struct rpc_client *cli);
bool rpc_client_connected(const struct rpc_client *cli);
const char *rpc_client_status_name(int status);
/* The stable `code` of an RPC error object ({"code": ...}), or "" if it has none. Borrowed. */
const char *rpc_client_err_code(const cJSON *err);

/*
 * Sends {"pattern":{"cmd":cmd},"data":data,"id":...}; takes ownership of data. Loop thread only.
 * fn is called with RPC_PARTIAL for each stream item, then exactly once with a final status.
 */
void rpc_client_call(struct rpc_client *cli, const char *cmd, cJSON *data, int timeout_ms,
                     rpc_reply_fn fn, void *arg);
/* Sends an event (no id, no reply). Loop thread only; -1 if not connected. */
int rpc_client_emit(struct rpc_client *cli, const char *cmd, cJSON *data) MUSTCHECK;

/*
 * Blocking call for threads other than the loop's (civetweb workers): posts the call to the
 * loop and waits. Takes ownership of data. On return *result holds a new tree (caller frees with
 * cJSON_Delete) for RPC_OK and RPC_ERROR, else NULL. progress, if set, runs on the loop thread
 * for each stream item. Returns the final status.
 */
enum rpc_status rpc_client_call_sync(struct rpc_client *cli, const char *cmd, cJSON *data,
                                     int timeout_ms, cJSON **result, rpc_reply_fn progress,
                                     void *progress_arg);

#endif
