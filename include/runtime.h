/*
 * The role runtime: runs the selected roles, each on its own thread and event loop, with the
 * process's signals on the main thread (SIGTERM/SIGINT: graceful stop bounded by
 * shutdown_timeout_ms; SIGHUP: log file reopened and log_level re-read), readiness and the
 * systemd watchdog (sd_notify), and the process-wide metrics registry.
 *
 * Ownership: runtime -> main loop, role contexts -> their loops -> role states.
 */
#ifndef CHANCED_RUNTIME_H
#define CHANCED_RUNTIME_H

#include <stddef.h>

struct conf;
struct role;

/* Exit codes of the daemon (sysexits.h values). */
enum runtime_exit {
    RUNTIME_EX_OK = 0,           /* clean stop */
    RUNTIME_EX_FAIL = 1,         /* runtime failure, or the drain deadline expired */
    RUNTIME_EX_USAGE = 64,       /* bad command line */
    RUNTIME_EX_UNAVAILABLE = 69, /* a role could not start */
    RUNTIME_EX_CONFIG = 78,      /* bad configuration */
};

#define RUNTIME_MAX_ROLES 3

struct runtime_opts {
    struct conf *conf;                           /* frozen configuration (borrowed) */
    const struct role *roles[RUNTIME_MAX_ROLES]; /* roles to run (borrowed descriptors) */
    size_t nroles;
    const char *config_path; /* --config, re-read on SIGHUP, or NULL (borrowed) */
    int nflags;              /* key flags from argv, re-applied on SIGHUP */
    char **flags;            /* borrowed */
    /* The key tables conf was built from, so a SIGHUP reload builds the same (borrowed). */
    const struct conf_module *const *modules;
    size_t nmodules;
};

/* Runs the roles until they stop; returns an enum runtime_exit value. Blocks. */
enum runtime_exit runtime_run(const struct runtime_opts *opts);

#endif
