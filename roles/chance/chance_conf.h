/* The chance role's configuration keys (roles/chance/chance_conf.c holds the table). */
#ifndef CHANCED_CHANCE_CONF_H
#define CHANCED_CHANCE_CONF_H

#include "conf.h"

struct chance_conf {
    char *chance_listen;                  /* RPC listen address */
    char *redis_url;                      /* redis://host:port/db */
    long long redis_timeout_ms;           /* connect/command deadline for Redis */
    char *redis_tls_ca;                   /* rediss://: CA file */
    char *redis_tls_cert;                 /* rediss://: client certificate */
    char *redis_tls_key;                  /* its key (secret: path or PEM) */
    long long max_codes_per_batch;        /* refuse bigger generate requests */
    long long code_length;                /* random characters per code (prefix excluded) */
    long long generate_chunk;             /* codes per pipelined round trip */
    long long generate_give_up_ms;        /* a batch failing this long is closed as failed */
    long long generate_busy_share;        /* % of the time generation works while claims run */
    long long relay_batch;                /* events per publish round */
    long long relay_sweep_ms;             /* every stream read this often */
    long long relay_claim_idle_ms;        /* take over entries idle this long */
    long long assignment_log_retention_s; /* trim assignment-log entries older than this */
    char *chance_health_listen;           /* /livez /readyz /metrics */
};

extern const struct conf_module chance_conf_module;

#endif
