/*
 * The gateway's shared runtime state and the few helpers every module calls. One struct gw per
 * running role, created by gateway_start (gateway.c, the wiring) on the loop thread and freed by
 * gateway_free after the loop returned. This module sits below every other gateway module: it
 * includes none of them but the conf, so the gateway's modules form no include cycle.
 *
 * Ownership:
 *   gw -> pg pool -> connections          (borrowed by workers between acquire and release)
 *      -> rpc clients (chance, logger)    (live on the loop; other threads use *_call_sync)
 *      -> http server -> worker threads   (each request borrows gw through the handler arg)
 *      -> bgtasks (outbox relay, reconciler)
 *      -> passwd, rate limiters, auth cache (metrics: borrowed from main)
 */
#ifndef CHANCED_GATEWAY_GW_H
#define CHANCED_GATEWAY_GW_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "gateway_conf.h"

struct authcache;
struct bgtask;
struct event;
struct health;
struct http_server;
struct loop;
struct metrics;
struct outbox;
struct passwd_hasher;
struct pg_pool;
struct ratelimit;
struct reconciler;
struct role_ctx;
struct rpc_client;

struct gw {
    const struct gateway_conf *conf; /* borrowed: the frozen configuration */
    struct role_ctx *ctx;            /* borrowed from main */
    struct loop *loop;               /* borrowed: the role's loop */
    size_t max_frame;                /* NestJS frame limit for the RPC clients */
    struct rpc_client *chance;       /* owned: chance role */
    struct rpc_client *logger;       /* owned: logger role */
    struct pg_pool *pg;              /* owned */
    struct passwd_hasher *passwd;    /* owned: argon2id with bounded concurrency */
    struct ratelimit *rl_login_ip;   /* owned: login attempts per client address (this process) */
    struct ratelimit *rl_signup_ip;  /* owned: signups per client address (this process) */
    struct ratelimit *rl_claim;      /* owned: claims per user */
    struct authcache *authcache;     /* owned: verified tokens, or NULL when disabled */
    struct metrics *metrics;         /* borrowed: the process-wide registry */
    struct http_server *http;        /* owned; freed by the stopper thread */
    struct outbox *outbox;           /* owned: the audit relay's state */
    struct bgtask *relay;            /* owned: runs outbox_relay_pass over outbox */
    struct bgtask *reconciler;       /* owned: runs reconcile_pass over rec */
    struct reconciler *rec;          /* owned: the reconciler's per-category state */
    struct event *health_timer;      /* owned: samples RPC connection state */
    struct health *health;           /* owned: the health port (gateway_health_listen) */
    bool ready_sent;                 /* loop thread only: role_ready was called */
    pthread_t stopper;               /* drains HTTP and the tasks after stop() */
    bool stopper_started;            /* stopper was created */
    int stopper_done;                /* atomic: stopper finished draining */
    int stopping;                    /* atomic: readiness answers 503 */
    int chance_up;                   /* atomic: chance connection is up */
    int logger_up;                   /* atomic: logger connection is up */
    int pg_up;                       /* atomic: last PostgreSQL use succeeded */
    char *failpoint;                 /* owned: CHANCED_FAILPOINT, or NULL */
    char *claim_secret;              /* owned: the key that tags claim ids (claimid.h) */
    char *openapi;                   /* owned: the OpenAPI document, built at start */
};

/* Wakes the outbox relay after a commit that wrote audit events. Any thread. */
void gw_outbox_kick(struct gw *gw);
/* Kills the process with SIGKILL if the failpoint `name` is armed (crash tests). */
void gw_failpoint(struct gw *gw, const char *name);
/* A PostgreSQL pool of `size` connections with the configured URL and timeouts. */
struct pg_pool *gw_pool_new(const struct gateway_conf *conf, int size);
/* The password hasher with the configured argon2id parameters; NULL if refused (logged). */
struct passwd_hasher *gw_passwd_new(const struct gateway_conf *conf);
/* Loads the claim id key: claim_secret, or the database's. -1 if neither (logged). */
int gw_load_claim_secret(struct gw *gw);
/* Records whether the last PostgreSQL use worked (feeds /readyz). */
void gw_pg_status(struct gw *gw, bool up);

#endif
