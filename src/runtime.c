/*
 * The role runtime: role threads and loops, signals on the main thread, graceful stop with a
 * deadline, readiness and watchdog notifications, SIGHUP reload of what can change at run time.
 */
#include "runtime.h"

#include <event2/event.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "core_conf.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "notify.h"
#include "role.h"
#include "util.h"

#ifndef CHANCED_VERSION
#define CHANCED_VERSION "0.0.0-dev"
#endif

extern char **environ;

struct runtime;

struct role_ctx {
    const struct role *role; /* borrowed descriptor */
    struct runtime *rt;      /* borrowed back-pointer */
    struct loop *loop;       /* owned; runs on thread */
    pthread_t thread;        /* the role's thread */
    void *state;             /* the role's own state (role thread only) */
    bool ready;              /* role_ready was called (role thread only) */
    bool stopping;           /* stop requested (role thread only) */
};

struct runtime {
    const struct runtime_opts *opts;        /* borrowed */
    struct loop *main_loop;                 /* signals and coordination */
    struct role_ctx ctx[RUNTIME_MAX_ROLES]; /* selected roles */
    size_t nroles;
    size_t nready, nexited;           /* main thread only */
    bool stopping;                    /* SIGTERM seen (main thread only) */
    bool forced;                      /* the drain deadline expired */
    enum runtime_exit exit_code;      /* what the process exits with */
    struct event *deadline;           /* drain bound */
    struct event *watchdog;           /* sd_notify WATCHDOG=1 */
    int64_t beats[RUNTIME_MAX_ROLES]; /* atomic: last loop heartbeat per role */
    struct metrics *metrics;          /* process-wide registry, owned */
};

static void begin_stop(struct runtime *rt, int code);

/* ---- calls from role threads, run on the main loop ---- */

enum role_event_kind {
    ROLE_EV_FAILED, /* start returned NULL */
    ROLE_EV_READY,  /* role_ready */
    ROLE_EV_EXITED, /* the role's loop returned and its state is freed */
    ROLE_EV_STATUS, /* role_status */
};

struct role_event {
    struct role_ctx *ctx;      /* which role */
    enum role_event_kind what; /* what happened */
    char status[128];          /* ROLE_EV_STATUS: a copy of the text */
};

static void
on_role_event(void *arg)
{
    struct role_event *ev = arg;
    struct role_ctx *ctx = ev->ctx;
    struct runtime *rt = ctx->rt;
    switch (ev->what) {
    case ROLE_EV_FAILED:
        log_error("role_start_failed", "role=%s", ctx->role->name);
        begin_stop(rt, RUNTIME_EX_UNAVAILABLE);
        rt->nexited++;
        pthread_join(ctx->thread, NULL);
        break;
    case ROLE_EV_READY:
        rt->nready++;
        if (rt->nready == rt->nroles && !rt->stopping) {
            log_info("ready", "roles=%zu", rt->nroles);
            notify_send("READY=1\nSTATUS=serving");
        }
        break;
    case ROLE_EV_STATUS: {
        char msg[200];
        snprintf(msg, sizeof(msg), "STATUS=%s: %s", ctx->role->name, ev->status);
        notify_send(msg);
        break;
    }
    case ROLE_EV_EXITED:
        rt->nexited++;
        pthread_join(ctx->thread, NULL);
        break;
    }
    free(ev);
    if (rt->nexited == rt->nroles) {
        loop_exit(rt->main_loop);
    }
}

static void
post_role_event(struct role_ctx *ctx, enum role_event_kind what, const char *status)
{
    struct role_event *ev = xcalloc(1, sizeof(*ev));
    ev->ctx = ctx;
    ev->what = what;
    if (status) {
        snprintf(ev->status, sizeof(ev->status), "%s", status);
    }
    loop_post(ctx->rt->main_loop, on_role_event, ev);
}

struct loop *
role_loop(struct role_ctx *ctx)
{
    return ctx->loop;
}

struct metrics *
role_metrics(struct role_ctx *ctx)
{
    return ctx->rt->metrics;
}

const struct conf *
role_conf(struct role_ctx *ctx)
{
    return ctx->rt->opts->conf;
}

bool
role_all(struct role_ctx *ctx)
{
    return ctx->rt->nroles > 1; /* one role, or all of them */
}

void
role_ready(struct role_ctx *ctx)
{
    if (!ctx->ready) {
        ctx->ready = true;
        post_role_event(ctx, ROLE_EV_READY, NULL);
    }
}

void
role_status(struct role_ctx *ctx, const char *status)
{
    post_role_event(ctx, ROLE_EV_STATUS, status);
}

void
role_done(struct role_ctx *ctx)
{
    loop_exit(ctx->loop);
}

/* ---- role threads ---- */

static void *
role_thread(void *arg)
{
    struct role_ctx *ctx = arg;
    log_set_role(ctx->role->name);
    ctx->state = ctx->role->start(ctx);
    if (ctx->state == NULL) {
        post_role_event(ctx, ROLE_EV_FAILED, NULL);
        return NULL;
    }
    if (loop_run(ctx->loop) != 0) {
        log_error("loop_failed", "role=%s", ctx->role->name);
    }
    ctx->role->free(ctx->state);
    ctx->state = NULL;
    log_info("role_stopped", "role=%s", ctx->role->name);
    post_role_event(ctx, ROLE_EV_EXITED, NULL);
    return NULL;
}

/* Runs on the role's loop thread. */
static void
do_stop(void *arg)
{
    struct role_ctx *ctx = arg;
    if (!ctx->stopping && ctx->state) {
        ctx->stopping = true;
        ctx->role->stop(ctx->state);
    }
}

/* Runs on the role's loop thread: proves the loop turns. */
static void
do_beat(void *arg)
{
    struct role_ctx *ctx = arg;
    struct runtime *rt = ctx->rt;
    __atomic_store_n(&rt->beats[ctx - rt->ctx], time_mono_ms(), __ATOMIC_RELAXED);
}

static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct runtime *rt = arg;
    UNUSED(fd);
    UNUSED(what);
    log_warn("shutdown_forced", "reason=drain_timeout");
    rt->forced = true;
    for (size_t i = 0; i < rt->nroles; i++) {
        loop_exit(rt->ctx[i].loop);
    }
}

static void
on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    struct runtime *rt = arg;
    UNUSED(fd);
    UNUSED(what);
    int64_t now = time_mono_ms(), limit = notify_watchdog_ms();
    bool alive = true;
    for (size_t i = 0; i < rt->nroles; i++) {
        int64_t beat = __atomic_load_n(&rt->beats[i], __ATOMIC_RELAXED);
        if (beat == 0 || now - beat > limit) {
            alive = false; /* a stuck role loop: let systemd restart us */
        }
        loop_post(rt->ctx[i].loop, do_beat, &rt->ctx[i]);
    }
    if (alive) {
        notify_send("WATCHDOG=1");
    }
}

static void
begin_stop(struct runtime *rt, int code)
{
    if (rt->stopping) {
        return;
    }
    rt->stopping = true;
    rt->exit_code = code;
    notify_send("STOPPING=1");
    log_info("stopping", "roles=%zu", rt->nroles);
    const struct core_conf *core = conf_module_data(rt->opts->conf, "core");
    for (size_t i = 0; i < rt->nroles; i++) {
        loop_post(rt->ctx[i].loop, do_stop, &rt->ctx[i]);
    }
    rt->deadline =
        loop_timer(rt->main_loop, (int)core->shutdown_timeout_ms, false, on_deadline, rt);
}

/* ---- SIGHUP ---- */

static void
report_change(const char *key, bool reloadable, void *arg)
{
    UNUSED(arg);
    if (reloadable) {
        log_info("reload_applied", "key=%s", key);
    } else {
        log_warn("reload_needs_restart", "key=%s note=\"changed; applied at the next start\"", key);
    }
}

/* Re-reads file, credentials, env and flags into a fresh conf; applies log_level (the one key
 * that changes at run time) and names every other changed key, which needs a restart. */
static void
reload_conf(struct runtime *rt)
{
    const struct runtime_opts *o = rt->opts;
    struct conf *fresh = conf_new(o->modules, o->nmodules);
    char err[512];
    if (conf_load(fresh, o->config_path, environ, o->nflags, o->flags, err, sizeof(err)) != 0) {
        log_error("reload_failed", "reason=\"%s\" note=keeping_old_config", err);
    } else {
        const struct core_conf *core = conf_module_data(fresh, "core");
        log_set_level(log_parse_level(core->log_level));
        size_t changed = conf_changed(o->conf, fresh, report_change, NULL);
        log_info("reloaded", "log_level=%s changed_keys=%zu", core->log_level, changed);
    }
    conf_free(fresh);
}

static void
on_signal(int signo, void *arg)
{
    struct runtime *rt = arg;
    if (signo == SIGHUP) {
        log_info("reload", "signal=SIGHUP");
        log_reopen();
        reload_conf(rt);
        return;
    }
    if (rt->stopping) {
        log_warn("signal_again", "signo=%d note=already_stopping", signo);
        return;
    }
    begin_stop(rt, RUNTIME_EX_OK);
}

/* ---- run ---- */

static void
describe_build(struct runtime *rt)
{
    metrics_describe(rt->metrics, "chanced_build_info", METRICS_GAUGE,
                     "Build and role information; always 1.");
    for (size_t i = 0; i < rt->nroles; i++) {
        char labels[128];
        snprintf(labels, sizeof(labels), "version=\"%s\",role=\"%s\"", CHANCED_VERSION,
                 rt->ctx[i].role->name);
        metrics_set(rt->metrics, "chanced_build_info", labels, 1);
    }
}

/* Creates one thread per role; signals stay with the main thread. */
static void
start_roles(struct runtime *rt)
{
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    for (size_t i = 0; i < rt->nroles; i++) {
        if (pthread_create(&rt->ctx[i].thread, NULL, role_thread, &rt->ctx[i]) != 0) {
            log_error("thread_failed", "role=%s", rt->ctx[i].role->name);
            abort();
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void
cleanup(struct runtime *rt)
{
    if (rt->watchdog) {
        event_free(rt->watchdog);
    }
    if (rt->deadline) {
        event_free(rt->deadline);
    }
    for (size_t i = 0; i < rt->nroles; i++) {
        loop_free(rt->ctx[i].loop);
    }
    loop_free(rt->main_loop);
    metrics_free(rt->metrics);
}

enum runtime_exit
runtime_run(const struct runtime_opts *opts)
{
    struct runtime rt = {.opts = opts, .nroles = opts->nroles};
    int rc = RUNTIME_EX_FAIL;
    rt.main_loop = loop_new();
    if (rt.main_loop == NULL || loop_catch_signals(rt.main_loop, on_signal, &rt) != 0) {
        goto out;
    }
    rt.metrics = metrics_new();
    for (size_t i = 0; i < rt.nroles; i++) {
        rt.ctx[i].role = opts->roles[i];
        rt.ctx[i].rt = &rt;
        if ((rt.ctx[i].loop = loop_new()) == NULL) {
            goto out;
        }
    }
    describe_build(&rt);
    log_info("process_up", "version=%s roles=%zu backend=%s pid=%d", CHANCED_VERSION, rt.nroles,
             event_base_get_method(loop_base(rt.main_loop)), (int)getpid());
    start_roles(&rt);
    int64_t wd = notify_watchdog_ms();
    if (wd > 0) {
        rt.watchdog =
            loop_timer(rt.main_loop, (int)(wd / 3 > 0 ? wd / 3 : 1), true, on_watchdog, &rt);
    }
    if (loop_run(rt.main_loop) != 0) {
        goto out;
    }
    rc = rt.forced && rt.exit_code == RUNTIME_EX_OK ? RUNTIME_EX_FAIL : rt.exit_code;
    log_info("process_exit", "code=%d", rc);
out:
    cleanup(&rt);
    return rc;
}
