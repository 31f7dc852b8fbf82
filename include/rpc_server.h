/*
 * RPC server over the NestJS TCP transport: accepts conns, routes requests by normalised pattern
 * to handlers, and sends responses, stream items and errors in Nest's shapes.
 *
 * Per peer: an idle conn (no call in flight, no frame for idle_ms) is closed, and a conn with
 * max_inflight calls in flight is not read until one finishes (its further requests wait in
 * its socket buffers; nothing is refused). With TLS files the listener speaks TLS only, and
 * with a CA every client must present a certificate signed by it (mutual TLS): a peer without
 * one fails the handshake and never gets a frame decoded.
 *
 * Ownership: rpc_server -> listener -> conns -> calls. A call lives until its final reply
 * (rpc_reply / rpc_reply_error); if its conn closes first, the reply is dropped silently.
 */
#ifndef CHANCED_RPC_SERVER_H
#define CHANCED_RPC_SERVER_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "tls.h"
#include "util.h"

struct core_conf;
struct loop;
struct metrics;
struct rpc_server;
struct rpc_call;

/*
 * Handles one request. data is borrowed until the handler returns (duplicate to keep). The
 * handler must eventually finish the call with exactly one rpc_reply or rpc_reply_error, now
 * or later from the same loop thread.
 */
typedef void (*rpc_handler_fn)(struct rpc_call *call, const cJSON *data, void *arg);

struct rpc_route {
    const char *cmd;   /* matched against the pattern {"cmd": cmd} (or the bare string cmd) */
    rpc_handler_fn fn; /* handler */
    bool events;       /* also runs for events (no id; the reply goes nowhere), as a NestJS
                        * @EventPattern does; a request-only route ignores events */
};

struct rpc_server_opts {
    const char *listen;      /* "host:port" */
    size_t max_frame;        /* frame limit in UTF-16 units */
    int stall_ms;            /* partial-frame stall limit */
    int max_conns;           /* refuse beyond this */
    struct metrics *metrics; /* where calls are counted and timed (borrowed), or NULL */
    const char *role;        /* the role label of those series (borrowed, static) */
    int idle_ms;             /* close a conn idle this long (no call in flight); 0: never */
    int max_inflight;        /* calls in flight per conn before it is read no more; 0: no cap */
    struct tls_files tls;    /* cert (+key): TLS; with ca too: mutual TLS. Borrowed strings */
    bool insecure;           /* a non-loopback listen address may go without mutual TLS */
    bool loopback_only;      /* bind the listen port on loopback whatever its host (role=all) */
};

/* Fills the opts that come from the core keys (frame limits, max_conns, rpc_idle_timeout_ms,
 * rpc_max_inflight, rpc_tls_*, rpc_insecure); the caller sets listen, metrics, role. */
void rpc_server_opts_from_core(struct rpc_server_opts *opts, const struct core_conf *core);

/*
 * The listener check before anything starts (a failure is a configuration error, exit 78):
 * the TLS files load, and a listen address that is not loopback has mutual TLS (rpc_tls_ca,
 * rpc_tls_cert, rpc_tls_key) unless rpc_insecure is set. key names the listen key in messages;
 * loopback_only: the listener will bind loopback anyway. -1 with err filled on failure.
 */
int rpc_server_check_conf(const struct core_conf *core, const char *key, const char *listen,
                          bool loopback_only, char *err, size_t errlen) MUSTCHECK;
/* True if host (an IP literal, "[v6]" or "localhost") is a loopback address. */
bool rpc_host_is_loopback(const char *host);

/* Binds and starts accepting; NULL with err filled if it cannot listen. routes are borrowed. */
struct rpc_server *rpc_server_new(struct loop *loop, const struct rpc_server_opts *opts,
                                  const struct rpc_route *routes, size_t nroutes, void *arg,
                                  char *err, size_t errlen);
/* Closes the listener and every conn. Calls still held by handlers become orphans: finishing
 * them later only frees them. NULL is a no-op. */
void rpc_server_free(struct rpc_server *srv);
/* Stops accepting new conns (drain); existing conns keep being served. */
void rpc_server_stop_accepting(struct rpc_server *srv);
/* Calls that have not been finished yet. */
size_t rpc_server_inflight(const struct rpc_server *srv);
/* Reply bytes still queued on open conns (a drain waits for 0 so no answer is cut off). */
size_t rpc_server_pending_output(const struct rpc_server *srv);

/* Final reply; takes ownership of response (NULL: a void reply, no "response"). Frees the call. */
void rpc_reply(struct rpc_call *call, cJSON *response);
/* One item of a streamed reply; takes ownership of response. The call stays open. */
void rpc_reply_partial(struct rpc_call *call, cJSON *response);
/*
 * Final error reply {"err":{"status":"error","code":code,"message":msg}}; frees the call. Use
 * stable snake_case codes; "bad_request" style codes mean the caller erred, "internal" ones us.
 */
void rpc_reply_error(struct rpc_call *call, const char *code, const char *fmt, ...)
    PRINTF_LIKE(3, 4);

/* The route's cmd; borrowed for the call's life. */
const char *rpc_call_cmd(const struct rpc_call *call);
/* The request id carried from the caller (or generated); borrowed for the call's life. */
const char *rpc_call_request_id(const struct rpc_call *call);
/* True if the peer went away (a reply would be dropped). */
bool rpc_call_abandoned(const struct rpc_call *call);

#endif
