/*
 * The role interface. A role is a const descriptor; the runtime (runtime.h) runs each selected
 * role on its own thread and loop and drives its lifecycle:
 *
 *   start(ctx) -> ... serve ... -> stop(state) -> (role calls role_done) -> free(state)
 *
 * Ownership: the runtime owns each struct role_ctx and its loop; a role owns its state.
 */
#ifndef CHANCED_ROLE_H
#define CHANCED_ROLE_H

#include <stdbool.h>

struct conf;
struct conf_module;
struct loop;
struct metrics;
struct role_ctx;

struct role {
    const char *name;               /* "gateway", "chance", "logger" */
    const struct conf_module *conf; /* its key table */
    /* Starts on ctx's loop thread; returns the role's state, or NULL (logged) to fail start. */
    void *(*start)(struct role_ctx *ctx);
    /* Begins a graceful stop: stop accepting, finish in-flight work, then call role_done(). */
    void (*stop)(void *state);
    /* Frees the state after the loop has returned. */
    void (*free)(void *state);
    /*
     * Handles a subcommand (e.g. "migrate") if it is this role's; argv[0] is the subcommand.
     * Returns an exit code, or -1 if the command is not this role's. May be NULL.
     */
    int (*command)(const struct conf *conf, int argc, char **argv);
    /* One line per subcommand for --help, or NULL. */
    const char *command_help;
    /* The config key (of this role's own module) holding the address that serves /readyz,
     * /livez and /metrics: `chanced healthcheck` probes it. */
    const char *health_key;
    /* The key of the NestJS TCP listener this role serves, and the keys of the RPC addresses
     * it calls (NULL-terminated); NULL if none. Their TLS settings are checked before any role
     * starts (rpc_server_check_conf, rpc_client_check_conf): a failure exits 78. */
    const char *rpc_listen_key;
    const char *const *rpc_peer_keys;
};

/* The role's loop (borrowed; valid until free). */
struct loop *role_loop(struct role_ctx *ctx);
/* The frozen configuration (borrowed). */
const struct conf *role_conf(struct role_ctx *ctx);
/* The process-wide metrics registry (borrowed; thread-safe). */
struct metrics *role_metrics(struct role_ctx *ctx);
/* True when every role runs in this process (--role=all): the internal links stay inside it,
 * so their listeners bind loopback. */
bool role_all(struct role_ctx *ctx);
/* Tells the runtime the role is serving (listeners up, dependencies reachable). Loop thread. */
void role_ready(struct role_ctx *ctx);
/* Sets a one-line human status (sd_notify STATUS=; copied). Loop thread. */
void role_status(struct role_ctx *ctx, const char *status);
/* Tells the runtime the role finished draining; its loop then returns. Loop thread. */
void role_done(struct role_ctx *ctx);

extern const struct role role_chance;
extern const struct role role_gateway;
extern const struct role role_logger;

#endif
