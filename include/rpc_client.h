/*
 * RPC client over the NestJS TCP transport: a connection to every address of its peer list
 * ("host:port[,host:port...]"; a name counts once per address it resolves to, and is resolved
 * again every few seconds off the loop), many requests in flight matched by id, a deadline per
 * call, reconnect with exponential backoff per address. Each call goes to the next connected
 * address (per request, not per connection); a call never sent is failed as unavailable, one
 * sent on a connection that then drops as lost (its outcome is unknown: never retried here).
 * Used by the gateway for chance and logger. With a TLS CA the connection is TLS: the server's certificate must chain to that
 * CA and name the host of the address (a DNS name, or an IP address in its IP SANs), and the
 * client presents its own certificate (mutual TLS).
 */
#ifndef CHANCED_RPC_CLIENT_H
#define CHANCED_RPC_CLIENT_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "tls.h"
#include "util.h"

struct core_conf;
struct loop;
struct metrics;
struct rpc_client;

struct rpc_client_opts {
    size_t max_frame;        /* frame limit in UTF-16 units */
    struct tls_files tls;    /* ca set: TLS against it, presenting cert/key. Borrowed strings */
    struct metrics *metrics; /* handshake failures counted here (borrowed), or NULL */
    const char *role;        /* the role label of that series (borrowed, static) */
};

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

/* Fills max_frame and tls from the core keys (max_frame_bytes, rpc_tls_*). */
void rpc_client_opts_from_core(struct rpc_client_opts *opts, const struct core_conf *core);
/*
 * The check before anything starts (a failure is a configuration error, exit 78): the TLS files
 * load, a certificate is not given without the CA, and an address that is not loopback has
 * mutual TLS unless rpc_insecure is set. key names the address key in messages.
 */
int rpc_client_check_conf(const struct core_conf *core, const char *key, const char *addr,
                          char *err, size_t errlen) MUSTCHECK;
/* Creates a client for the address list and starts connecting; NULL with err filled on a bad
 * address or TLS files that do not load. */
struct rpc_client *rpc_client_new(struct loop *loop, const char *addr,
                                  const struct rpc_client_opts *opts, char *err, size_t errlen);
/* Fails every call still pending (RPC_LOST if sent, RPC_UNAVAILABLE if not) and frees. */
void rpc_client_free(struct rpc_client *cli);
/* True if at least one address is connected. */
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
 * Blocking call for threads other than the loop's (HTTP workers): posts the call to the
 * loop and waits. Takes ownership of data. On return *result holds a new tree (caller frees with
 * cJSON_Delete) for RPC_OK and RPC_ERROR, else NULL. progress, if set, runs on the loop thread
 * for each stream item. Returns the final status.
 */
enum rpc_status rpc_client_call_sync(struct rpc_client *cli, const char *cmd, cJSON *data,
                                     int timeout_ms, cJSON **result, rpc_reply_fn progress,
                                     void *progress_arg);

#endif
