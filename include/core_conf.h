/* The core's key table: logging, framing limits, shutdown. */
#ifndef CHANCED_CORE_CONF_H
#define CHANCED_CORE_CONF_H

#include "conf.h"

struct core_conf {
    char *log_level;               /* error|warn|info|debug */
    char *log_format;              /* json|text|auto */
    char *log_file;                /* "" = stdout */
    long long max_frame_bytes;     /* NestJS frame limit (UTF-16 units) */
    long long frame_stall_ms;      /* partial frame deadline */
    long long shutdown_timeout_ms; /* drain bound on SIGTERM */
    long long max_conns;           /* per RPC listener */
};

extern const struct conf_module core_conf_module;

#endif
