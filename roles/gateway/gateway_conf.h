/* The gateway role's configuration keys (roles/gateway/gateway_conf.c holds the table). */
#ifndef CHANCED_GATEWAY_CONF_H
#define CHANCED_GATEWAY_CONF_H

#include <stdbool.h>

#include "conf.h"

struct gateway_conf {
    char *http_listen;                 /* host:port of the HTTP API */
    char *gateway_health_listen;       /* /livez, /readyz with details, /metrics */
    long long http_threads;            /* workers running handlers (connections cost none) */
    long long http_request_timeout_ms; /* write stall bound; queue wait bound */
    long long http_read_timeout_ms;    /* a request's headers and body arrive within this */
    long long http_max_header_bytes;   /* request line + headers above this get 431 */
    long long http_max_conns;          /* open connections in total */
    long long http_max_conns_per_addr; /* open connections per client address (IPv6: /64) */
    long long max_body_bytes;          /* request bodies above this get 413 */
    char *chance_addr;                 /* chance role, NestJS TCP */
    char *logger_addr;                 /* logger role, NestJS TCP */
    long long rpc_timeout_ms;          /* deadline of chance.claim and reads */
    long long logger_timeout_ms;       /* deadline of log.* calls */
    char *postgres_url;                /* libpq URI (secret: may hold a password) */
    long long pg_pool_size;            /* blocking connections shared by the workers */
    long long pg_acquire_timeout_ms;   /* wait for a free connection before 503 */
    long long pg_connect_timeout_s;    /* libpq connect_timeout */
    long long pg_statement_timeout_ms;
    const char *claim_secret; /* tags claim ids; "" = the database's */
    bool pg_prepared;
    /* named statements; false behind a transaction pooler */ /* server-side statement_timeout */
    long long token_ttl_s;                                    /* session lifetime */
    long long auth_cache_ms;             /* how long a verified token is trusted without PG */
    bool cookie_secure;                  /* Secure attribute on the session cookie */
    long long argon2_memory_kib;         /* argon2id m */
    long long argon2_iterations;         /* argon2id t */
    long long argon2_parallelism;        /* argon2id p */
    long long argon2_max_inflight;       /* hashes computed at once */
    long long argon2_queue_ms;           /* wait for a hashing slot before 503 */
    long long argon2_queue_max;          /* callers waiting for a slot; more get 503 at once */
    long long login_rate_ip;             /* login attempts per minute per client address */
    long long login_burst_ip;            /* ... of which this many at once */
    long long login_fail_rate;           /* failures per minute per (username, address) */
    long long login_rate_user;           /* failures per minute per username, then delay */
    long long login_user_delay_ms;       /* longest such delay */
    long long signup_rate_ip;            /* signups per minute per client address */
    long long claim_rate;                /* claims per second per user */
    long long claim_burst;               /* claims a user may make at once */
    bool trust_forwarded_for;            /* take the client address from X-Forwarded-For */
    long long reconcile_interval_ms;     /* reconciler pass period */
    long long reconcile_grace_ms;        /* leave assignments this young to the request path */
    long long pending_settle_ms;         /* age at which a pending claim is driven again */
    long long reconcile_verify_delay_ms; /* credits this old are checked against Redis */
    long long lease_ttl_ms;              /* one-at-a-time work changes hands after this */
    long long outbox_interval_ms;        /* relay poll period when idle */
    long long outbox_batch;              /* events per log.append */
    long long outbox_retention_s;        /* delivered rows kept this long; 0: none */
};

extern const struct conf_module gateway_conf_module;

#endif
