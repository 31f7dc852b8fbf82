/*
 * The gateway role: wiring (start, stop, free) and the subcommands `chanced migrate` and
 * `chanced admin create-user`. Nothing includes this file's header: it has none beyond role.h.
 */
#include "gw.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "bgtask.h"
#include "conf.h"
#include "core_conf.h"
#include "health.h"
#include "http.h"
#include "log.h"
#include "loop.h"
#include "gwmetrics.h"
#include "migrate.h"
#include "openapi.h"
#include "outbox.h"
#include "passwd.h"
#include "pg.h"
#include "ratelimit.h"
#include "reconcile.h"
#include "role.h"
#include "rpc_client.h"
#include "usercmd.h"

#ifndef CHANCED_VERSION
#define CHANCED_VERSION "0.0.0-dev"
#endif

#define HEALTH_SAMPLE_MS 50 /* how often RPC connection state is copied for /readyz */
#define OUTBOX_LINGER_MS 20 /* after a commit, wait this long so one relay pass takes many */

/* ---- lifecycle ---- */

static void
on_health(evutil_socket_t fd, short what, void *arg)
{
    struct gw *gw = arg;
    UNUSED(fd);
    UNUSED(what);
    __atomic_store_n(&gw->chance_up, rpc_client_connected(gw->chance) ? 1 : 0, __ATOMIC_RELAXED);
    __atomic_store_n(&gw->logger_up, rpc_client_connected(gw->logger) ? 1 : 0, __ATOMIC_RELAXED);
    /* READY=1 only once /readyz would say so: PostgreSQL answered and chance is connected. */
    if (!gw->ready_sent && __atomic_load_n(&gw->chance_up, __ATOMIC_RELAXED) &&
        __atomic_load_n(&gw->pg_up, __ATOMIC_RELAXED) &&
        !__atomic_load_n(&gw->stopping, __ATOMIC_RELAXED)) {
        gw->ready_sent = true;
        role_status(gw->ctx, "serving");
        role_ready(gw->ctx);
    }
}

/* /readyz of the health port: PostgreSQL answered lately and chance is connected. */
static bool
gw_is_ready(void *arg, char *why, size_t size)
{
    struct gw *gw = arg;
    bool stopping = __atomic_load_n(&gw->stopping, __ATOMIC_RELAXED);
    bool pg = __atomic_load_n(&gw->pg_up, __ATOMIC_RELAXED);
    bool chance = __atomic_load_n(&gw->chance_up, __ATOMIC_RELAXED);
    bool logger = __atomic_load_n(&gw->logger_up, __ATOMIC_RELAXED);
    snprintf(why, size, "%s postgres=%s chance=%s logger=%s",
             stopping ? "draining" : "checks:", pg ? "up" : "down", chance ? "up" : "down",
             logger ? "up" : "down");
    return !stopping && pg && chance;
}

static void
gw_release(struct gw *gw)
{
    /* First: under --role=all another role's /metrics runs the collector on its own thread, and
     * the collector reads the pool and the argon2 slots freed below. */
    gwmetrics_cleanup(gw);
    health_free(gw->health);
    if (gw->health_timer) {
        event_free(gw->health_timer);
    }
    reconciler_free(gw->rec);
    outbox_free(gw->outbox);
    rpc_client_free(gw->chance);
    rpc_client_free(gw->logger);
    pg_pool_free(gw->pg);
    passwd_free(gw->passwd);
    ratelimit_free(gw->rl_login_ip);
    ratelimit_free(gw->rl_signup_ip);
    ratelimit_free(gw->rl_claim);
    authcache_free(gw->authcache);
    free(gw->openapi);
    free(gw->failpoint);
    if (gw->claim_secret) {
        util_wipe(gw->claim_secret, strlen(gw->claim_secret));
        free(gw->claim_secret);
    }
    free(gw);
}

static void *
gateway_start(struct role_ctx *ctx)
{
    const struct conf *conf = role_conf(ctx);
    const struct core_conf *core = conf_module_data(conf, "core");
    struct gw *gw = xcalloc(1, sizeof(*gw));
    gw->ctx = ctx;
    gw->loop = role_loop(ctx);
    gw->conf = conf_module_data(conf, "gateway");
    gw->max_frame = (size_t)core->max_frame_bytes;
    const struct gateway_conf *c = gw->conf;
    const char *fp = getenv("CHANCED_FAILPOINT");
    if (fp && *fp) {
        gw->failpoint = xstrdup(fp);
        log_warn("failpoint_armed", "name=%s note=\"test builds only; the process kills itself\"",
                 fp);
    }

    /* Blocking work before serving is fine here: the loop does not run yet. */
    gw->pg = gw_pool_new(c, (int)c->pg_pool_size);
    if (migrate_apply(gw->pg) != 0 || gw_load_claim_secret(gw) != 0) {
        goto fail;
    }
    gw->pg_up = 1;
    if ((gw->passwd = gw_passwd_new(c)) == NULL) {
        goto fail;
    }
    /* In-process first lines before the shared buckets (api_auth.c): a flood from one address
     * is refused here without a PostgreSQL round trip. */
    gw->rl_login_ip =
        ratelimit_new((double)c->login_rate_ip / 60.0, (double)c->login_burst_ip, 100000);
    gw->rl_signup_ip =
        ratelimit_new((double)c->signup_rate_ip / 60.0, (double)c->signup_rate_ip, 100000);
    gw->rl_claim = ratelimit_new((double)c->claim_rate, (double)c->claim_burst, 100000);
    if (c->auth_cache_ms > 0) {
        gw->authcache = authcache_new((int)c->auth_cache_ms);
    }
    gw->metrics = role_metrics(ctx);
    gwmetrics_init(gw);
    gw->openapi = openapi_build(CHANCED_VERSION);
    struct rpc_client_opts ro = {.metrics = gw->metrics, .role = "gateway"};
    rpc_client_opts_from_core(&ro, core); /* frame limit, rpc_tls_* */
    char err[256] = "";
    gw->chance = rpc_client_new(gw->loop, c->chance_addr, &ro, err, sizeof(err));
    gw->logger =
        gw->chance ? rpc_client_new(gw->loop, c->logger_addr, &ro, err, sizeof(err)) : NULL;
    if (gw->chance == NULL || gw->logger == NULL) {
        log_error("gateway_start_failed", "reason=\"%s\"", err);
        goto fail;
    }
    gw->health = health_new(gw->loop, c->gateway_health_listen, gw->metrics, gw_is_ready, gw, err,
                            sizeof(err));
    if (gw->health == NULL) {
        log_error("gateway_start_failed", "reason=\"%s\"", err);
        goto fail;
    }
    gw->health_timer = loop_timer(gw->loop, HEALTH_SAMPLE_MS, true, on_health, gw);
    gw->rec = reconciler_new(gw);
    struct outbox_opts oo = {gw->pg,
                             gw->logger,
                             gw->metrics,
                             &gw->pg_up,
                             (int)c->outbox_batch,
                             (int)c->outbox_retention_s,
                             (int)c->pg_acquire_timeout_ms,
                             (int)c->logger_timeout_ms,
                             (int)c->lease_ttl_ms};
    gw->outbox = outbox_new(&oo);
    gw->relay = bgtask_start("outbox", (int)c->outbox_interval_ms, OUTBOX_LINGER_MS,
                             outbox_relay_pass, gw->outbox);
    gw->reconciler =
        bgtask_start("reconciler", (int)c->reconcile_interval_ms, 0, reconcile_pass, gw->rec);
    struct http_options ho = {
        .listen = c->http_listen,
        .threads = (int)c->http_threads,
        .request_timeout_ms = (int)c->http_request_timeout_ms,
        .read_timeout_ms = (int)c->http_read_timeout_ms,
        .max_header_bytes = (size_t)c->http_max_header_bytes,
        .max_body_bytes = (size_t)c->max_body_bytes,
        .max_conns = (int)c->http_max_conns,
        .max_conns_per_addr = (int)c->http_max_conns_per_addr,
        .trust_forwarded = c->trust_forwarded_for,
    };
    if ((gw->http = http_server_new(&ho, api_dispatch, gw)) == NULL) {
        __atomic_store_n(&gw->stopping, 1, __ATOMIC_RELAXED);
        bgtask_stop(gw->reconciler);
        bgtask_stop(gw->relay);
        goto fail;
    }
    log_info("gateway_started", "http=%s chance=%s logger=%s pg_pool=%lld", c->http_listen,
             c->chance_addr, c->logger_addr, c->pg_pool_size);
    role_status(ctx, "waiting for chance");
    return gw;
fail:
    gw_release(gw);
    return NULL;
}

static void
on_drained(void *arg)
{
    struct gw *gw = arg;
    role_done(gw->ctx);
}

/* Drains off the loop thread: handlers and tasks may wait on synchronous RPC, which needs it. */
static void *
stopper(void *arg)
{
    struct gw *gw = arg;
    log_set_role("gateway");
    http_server_free(gw->http);
    gw->http = NULL;
    bgtask_stop(gw->reconciler);
    gw->reconciler = NULL;
    bgtask_stop(gw->relay);
    gw->relay = NULL;
    /* A last delivery of audit events written by the final requests; the rest wait in the outbox. */
    for (int i = 0; i < 10 && __atomic_load_n(&gw->logger_up, __ATOMIC_RELAXED); i++) {
        if (!outbox_flush_pass(gw->outbox)) {
            break;
        }
    }
    log_info("gateway_drained", "relay=flushed");
    __atomic_store_n(&gw->stopper_done, 1, __ATOMIC_RELEASE);
    loop_post(gw->loop, on_drained, gw);
    return NULL;
}

static void
gateway_stop(void *state)
{
    struct gw *gw = state;
    __atomic_store_n(&gw->stopping, 1, __ATOMIC_RELAXED);
    role_status(gw->ctx, "draining");
    if (pthread_create(&gw->stopper, NULL, stopper, gw) != 0) {
        log_error("thread_failed", "task=stopper");
        abort();
    }
    gw->stopper_started = true;
}

static void
gateway_free(void *state)
{
    struct gw *gw = state;
    if (gw->stopper_started && !__atomic_load_n(&gw->stopper_done, __ATOMIC_ACQUIRE)) {
        /* The drain deadline passed with work still blocked: the process is exiting anyway, and
         * freeing what that work still uses would only turn a slow exit into a crash. */
        log_warn("gateway_abandoned", "reason=drain_timeout");
        pthread_detach(gw->stopper);
        return;
    }
    if (gw->stopper_started) {
        pthread_join(gw->stopper, NULL);
    }
    gw_release(gw);
}

static int
gateway_command(const struct conf *conf, int argc, char **argv)
{
    const struct gateway_conf *c = conf_module_data(conf, "gateway");
    if (strcmp(argv[0], "migrate") == 0) {
        if (argc != 1) {
            fprintf(stderr, "chanced: usage: chanced migrate\n");
            return 64;
        }
        struct pg_pool *pool = gw_pool_new(c, 1);
        int rc = migrate_apply(pool);
        pg_pool_free(pool);
        return rc == 0 ? 0 : rc == -2 ? 1 : 69;
    }
    if (strcmp(argv[0], "admin") == 0) {
        return usercmd_run(c, argc, argv);
    }
    return -1;
}

const struct role role_gateway = {
    .name = "gateway",
    .conf = &gateway_conf_module,
    .start = gateway_start,
    .stop = gateway_stop,
    .free = gateway_free,
    .command = gateway_command,
    .command_help = "       chanced migrate [--postgres_url=URL]\n"
                    "       chanced admin create-user --username U [--admin] [--password-file F] "
                    "[--if-missing]\n",
    .health_key = "gateway_health_listen",
    .rpc_peer_keys = (const char *const[]){"chance_addr", "logger_addr", NULL},
};
