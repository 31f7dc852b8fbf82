/* The core's key table: logging, framing limits, shutdown, the internal RPC links. */
#ifndef CHANCED_CORE_CONF_H
#define CHANCED_CORE_CONF_H

#include <stdbool.h>

#include "conf.h"

struct core_conf {
    char *log_level;               /* error|warn|info|debug */
    char *log_format;              /* json|text|auto */
    char *log_file;                /* "" = stdout */
    long long max_frame_bytes;     /* NestJS frame limit (UTF-16 units) */
    long long frame_stall_ms;      /* partial frame deadline */
    long long shutdown_timeout_ms; /* drain bound on SIGTERM */
    long long max_conns;           /* per RPC listener */
    long long rpc_idle_timeout_ms; /* close an idle RPC conn after this; 0 = never */
    long long rpc_max_inflight;    /* calls in flight per RPC conn before reading pauses */
    char *rpc_tls_ca;              /* CA file of the internal links ("" = no TLS) */
    char *rpc_tls_cert;            /* this side's certificate file */
    char *rpc_tls_key;             /* its key: a path or PEM text (secret) */
    bool rpc_insecure;             /* allow plain TCP on non-loopback addresses */
};

extern const struct conf_module core_conf_module;

#endif
