/*
 * chanced: argv -> conf -> log -> loops -> the selected roles, each on its own thread and
 * event_base -> signals on the main thread -> graceful stop -> tear down in reverse.
 */
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

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#ifndef CHANCED_VERSION
#define CHANCED_VERSION "0.0.0-dev"
#endif

#define EX_OK 0
#define EX_FAIL 1
#define EX_USAGE 64
#define EX_UNAVAILABLE 69
#define EX_CONFIG 78

extern char **environ;

static const struct role *const roles[] = {&role_gateway, &role_chance, &role_logger};

struct daemon;

struct role_ctx {
    const struct role *role; /* borrowed descriptor */
    struct daemon *d;        /* borrowed back-pointer */
    struct loop *loop;       /* owned by the role thread */
    pthread_t thread;
    void *state;      /* the role's own state */
    bool ready;       /* role_ready was called */
    bool stopping;    /* stop requested (role thread's view) */
    bool started;     /* start returned non-NULL */
    char status[128]; /* last STATUS= line */
};

struct daemon {
    struct conf *conf;       /* owned */
    const char *config_path; /* borrowed from argv */
    struct loop *main_loop;  /* signals and coordination */
    struct role_ctx ctx[3];  /* selected roles */
    size_t nroles;
    size_t nstarted, nready, nexited;
    bool stopping; /* SIGTERM seen */
    bool forced;   /* the drain deadline expired */
    int exit_code;
    struct event *deadline;  /* drain bound */
    struct event *watchdog;  /* sd_notify WATCHDOG=1 */
    int64_t beats[3];        /* last loop heartbeat per role, monotonic ms */
    struct metrics *metrics; /* process-wide registry, owned */
    int nflags;              /* key flags from argv, kept for SIGHUP reloads */
    char **flags;            /* borrowed from main */
};

static void begin_stop(struct daemon *d, int code);

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: chanced --role=gateway|chance|logger|all [--config=FILE] [--KEY=VALUE ...]\n"
            "       chanced config check [--config=FILE] [--KEY=VALUE ...]\n"
            "       chanced config markdown\n"
            "       chanced healthcheck --role=ROLE   (exit 0 if the role's /readyz says ready)\n");
    for (size_t i = 0; i < ARRAY_SIZE(roles); i++) {
        if (roles[i]->command_help) {
            fprintf(out, "%s", roles[i]->command_help);
        }
    }
    fprintf(out,
            "       chanced --help | --version\n\n"
            "Every key is also settable in the config file (key = value), as CHANCED_KEY in the\n"
            "environment, or as --key=value (precedence in that order). `chanced config check`\n"
            "prints every key with its value and source, secrets redacted. CHANCED_ROLE, if set,\n"
            "is the default for --role.\n"
            "Exit codes: 0 ok, 1 failure, 64 usage, 69 dependency unavailable, 78 bad config.\n");
}

/* ---- calls from role threads, run on the main loop ---- */

struct role_event {
    struct role_ctx *ctx; /* which role */
    int what;             /* one of the ROLE_EV_* */
};

enum { ROLE_EV_STARTED, ROLE_EV_FAILED, ROLE_EV_READY, ROLE_EV_EXITED, ROLE_EV_STATUS };

static void
on_role_event(void *arg)
{
    struct role_event *ev = arg;
    struct role_ctx *ctx = ev->ctx;
    struct daemon *d = ctx->d;
    switch (ev->what) {
    case ROLE_EV_STARTED: d->nstarted++; break;
    case ROLE_EV_FAILED:
        log_error("role_start_failed", "role=%s", ctx->role->name);
        begin_stop(d, EX_UNAVAILABLE);
        d->nexited++;
        pthread_join(ctx->thread, NULL);
        break;
    case ROLE_EV_READY:
        d->nready++;
        if (d->nready == d->nroles && !d->stopping) {
            log_info("ready", "roles=%zu", d->nroles);
            notify_send("READY=1\nSTATUS=serving");
        }
        break;
    case ROLE_EV_STATUS: {
        char msg[200];
        snprintf(msg, sizeof(msg), "STATUS=%s: %s", ctx->role->name, ctx->status);
        notify_send(msg);
        break;
    }
    case ROLE_EV_EXITED:
        d->nexited++;
        pthread_join(ctx->thread, NULL);
        break;
    }
    free(ev);
    if (d->nexited == d->nroles) {
        loop_exit(d->main_loop);
    }
}

static void
post_role_event(struct role_ctx *ctx, int what)
{
    struct role_event *ev = xmalloc(sizeof(*ev));
    ev->ctx = ctx;
    ev->what = what;
    loop_post(ctx->d->main_loop, on_role_event, ev);
}

struct loop *
role_loop(struct role_ctx *ctx)
{
    return ctx->loop;
}

struct metrics *
role_metrics(struct role_ctx *ctx)
{
    return ctx->d->metrics;
}

const struct conf *
role_conf(struct role_ctx *ctx)
{
    return ctx->d->conf;
}

void
role_ready(struct role_ctx *ctx)
{
    if (!ctx->ready) {
        ctx->ready = true;
        post_role_event(ctx, ROLE_EV_READY);
    }
}

void
role_status(struct role_ctx *ctx, const char *status)
{
    snprintf(ctx->status, sizeof(ctx->status), "%s", status);
    post_role_event(ctx, ROLE_EV_STATUS);
}

void
role_done(struct role_ctx *ctx)
{
    event_base_loopexit(loop_base(ctx->loop), NULL);
}

bool
role_combined(struct role_ctx *ctx)
{
    return ctx->d->nroles > 1;
}

bool
role_stopping(struct role_ctx *ctx)
{
    return ctx->stopping;
}

/* ---- role threads ---- */

static void *
role_thread(void *arg)
{
    struct role_ctx *ctx = arg;
    log_set_role(ctx->role->name);
    ctx->state = ctx->role->start(ctx);
    if (ctx->state == NULL) {
        post_role_event(ctx, ROLE_EV_FAILED);
        return NULL;
    }
    post_role_event(ctx, ROLE_EV_STARTED);
    if (loop_run(ctx->loop) != 0) {
        log_error("loop_failed", "role=%s", ctx->role->name);
    }
    ctx->role->free(ctx->state);
    ctx->state = NULL;
    log_info("role_stopped", "role=%s", ctx->role->name);
    post_role_event(ctx, ROLE_EV_EXITED);
    return NULL;
}

static void
do_stop(void *arg)
{
    struct role_ctx *ctx = arg;
    if (!ctx->stopping && ctx->state) {
        ctx->stopping = true;
        ctx->role->stop(ctx->state);
    }
}

static void
do_reload(void *arg)
{
    struct role_ctx *ctx = arg;
    if (ctx->state && ctx->role->reload) {
        ctx->role->reload(ctx->state);
    }
}

static void
do_beat(void *arg)
{
    struct role_ctx *ctx = arg;
    struct daemon *d = ctx->d;
    __atomic_store_n(&d->beats[ctx - d->ctx], time_mono_ms(), __ATOMIC_RELAXED);
}

static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct daemon *d = arg;
    UNUSED(fd);
    UNUSED(what);
    log_warn("shutdown_forced", "reason=drain_timeout");
    d->forced = true;
    for (size_t i = 0; i < d->nroles; i++) {
        if (d->ctx[i].loop) {
            loop_exit(d->ctx[i].loop);
        }
    }
}

static void
on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    struct daemon *d = arg;
    UNUSED(fd);
    UNUSED(what);
    int64_t now = time_mono_ms(), limit = notify_watchdog_ms();
    bool alive = true;
    for (size_t i = 0; i < d->nroles; i++) {
        int64_t beat = __atomic_load_n(&d->beats[i], __ATOMIC_RELAXED);
        if (beat == 0 || now - beat > limit) {
            alive = false; /* a stuck role loop: let systemd restart us */
        }
        loop_post(d->ctx[i].loop, do_beat, &d->ctx[i]);
    }
    if (alive) {
        notify_send("WATCHDOG=1");
    }
}

static void
begin_stop(struct daemon *d, int code)
{
    if (d->stopping) {
        return;
    }
    d->stopping = true;
    d->exit_code = code;
    notify_send("STOPPING=1");
    log_info("stopping", "roles=%zu", d->nroles);
    const struct core_conf *core = conf_module_data(d->conf, "core");
    for (size_t i = 0; i < d->nroles; i++) {
        if (d->ctx[i].loop) {
            loop_post(d->ctx[i].loop, do_stop, &d->ctx[i]);
        }
    }
    d->deadline = loop_timer(d->main_loop, (int)core->shutdown_timeout_ms, false, on_deadline, d);
}

/* SIGHUP: re-read file, env and flags into a fresh conf; apply what may change at run time. */
static void
reload_conf(struct daemon *d)
{
    const struct conf_module *mods[ARRAY_SIZE(roles) + 1] = {&core_conf_module};
    for (size_t i = 0; i < ARRAY_SIZE(roles); i++) {
        mods[i + 1] = roles[i]->conf;
    }
    struct conf *fresh = conf_new(mods, ARRAY_SIZE(mods));
    char err[512];
    if (conf_load(fresh, d->config_path, environ, d->nflags, d->flags, err, sizeof(err)) != 0) {
        log_error("reload_failed", "reason=\"%s\" note=keeping_old_config", err);
    } else {
        const struct core_conf *core = conf_module_data(fresh, "core");
        log_level_current = log_parse_level(core->log_level);
        conf_apply_reload(d->conf, fresh);
        log_info("reloaded", "log_level=%s", core->log_level);
    }
    conf_free(fresh);
}

static void
on_signal(int signo, void *arg)
{
    struct daemon *d = arg;
    if (signo == SIGHUP) {
        log_info("reload", "signal=SIGHUP");
        log_reopen();
        reload_conf(d);
        for (size_t i = 0; i < d->nroles; i++) {
            loop_post(d->ctx[i].loop, do_reload, &d->ctx[i]);
        }
        return;
    }
    if (d->stopping) {
        log_warn("signal_again", "signo=%d note=already_stopping", signo);
        return;
    }
    begin_stop(d, EX_OK);
}

static int
run_roles(struct daemon *d)
{
    d->main_loop = loop_new();
    if (d->main_loop == NULL || loop_catch_signals(d->main_loop, on_signal, d) != 0) {
        return EX_FAIL;
    }
    d->metrics = metrics_new();
    metrics_describe(d->metrics, "chanced_build_info", METRICS_GAUGE,
                     "Build and role information; always 1.");
    for (size_t i = 0; i < d->nroles; i++) {
        char labels[128];
        snprintf(labels, sizeof(labels), "version=\"%s\",role=\"%s\"", CHANCED_VERSION,
                 d->ctx[i].role->name);
        metrics_set(d->metrics, "chanced_build_info", labels, 1);
    }
    log_info("process_up", "version=%s roles=%zu backend=%s pid=%d", CHANCED_VERSION, d->nroles,
             event_base_get_method(loop_base(d->main_loop)), (int)getpid());
    for (size_t i = 0; i < d->nroles; i++) {
        struct role_ctx *ctx = &d->ctx[i];
        ctx->d = d;
        ctx->loop = loop_new();
        if (ctx->loop == NULL) {
            return EX_FAIL;
        }
    }
    /* Signals go to the main thread only: block them before creating role threads. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    for (size_t i = 0; i < d->nroles; i++) {
        if (pthread_create(&d->ctx[i].thread, NULL, role_thread, &d->ctx[i]) != 0) {
            log_error("thread_failed", "role=%s", d->ctx[i].role->name);
            abort();
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    int64_t wd = notify_watchdog_ms();
    if (wd > 0) {
        d->watchdog =
            loop_timer(d->main_loop, (int)(wd / 3 > 0 ? wd / 3 : 1), true, on_watchdog, d);
    }
    if (loop_run(d->main_loop) != 0) {
        return EX_FAIL;
    }
    if (d->watchdog) {
        event_free(d->watchdog);
    }
    if (d->deadline) {
        event_free(d->deadline);
    }
    for (size_t i = 0; i < d->nroles; i++) {
        loop_free(d->ctx[i].loop);
    }
    loop_free(d->main_loop);
    metrics_free(d->metrics);
    if (d->forced && d->exit_code == EX_OK) {
        return EX_FAIL;
    }
    log_info("process_exit", "code=%d", d->exit_code);
    return d->exit_code;
}

/* GET http://addr/readyz with a short deadline; 0 if it answered 200. */
static int
probe_ready(const char *addr)
{
    char *host;
    int port;
    if (addr == NULL || util_parse_hostport(addr, &host, &port) != 0) {
        return -1;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    /* A wildcard listener is reached through loopback. */
    if (strcmp(host, "0.0.0.0") == 0 || inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    }
    free(host);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    char buf[256];
    int ok = -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        static const char req[] = "GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n";
        ssize_t n;
        if (write(fd, req, sizeof(req) - 1) == (ssize_t)sizeof(req) - 1 &&
            (n = read(fd, buf, sizeof(buf) - 1)) > 12) {
            buf[n] = '\0';
            ok = strncmp(buf + 9, "200", 3) == 0 ? 0 : -1;
        }
    }
    close(fd);
    return ok;
}

/* chanced healthcheck: probes /readyz of each selected role; exit 0 only if all are ready. */
static int
healthcheck(struct daemon *d)
{
    int rc = EX_OK;
    /* Under --role=all the gateway (first in the table) answers for the whole process. */
    size_t n = d->nroles > 1 ? 1 : d->nroles;
    for (size_t i = 0; i < n; i++) {
        const struct role *r = d->ctx[i].role;
        const char *addr = r->health_key ? conf_get_str(d->conf, r->health_key) : NULL;
        if (probe_ready(addr) != 0) {
            fprintf(stderr, "chanced: %s is not ready at %s\n", r->name, addr ? addr : "?");
            rc = EX_FAIL;
        } else {
            printf("%s ready at %s\n", r->name, addr);
        }
    }
    return rc;
}

static int
select_roles(struct daemon *d, const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(roles); i++) {
        if (strcmp(name, "all") == 0 || strcmp(name, roles[i]->name) == 0) {
            d->ctx[d->nroles++].role = roles[i];
        }
    }
    return d->nroles > 0 ? 0 : -1;
}

static int
apply_logging(const struct conf *conf)
{
    const struct core_conf *core = conf_module_data(conf, "core");
    log_level_current = log_parse_level(core->log_level);
    if (log_set_format(core->log_format) != 0) {
        return -1;
    }
    if (*core->log_file && log_open_file(core->log_file) != 0) {
        fprintf(stderr, "chanced: log_file: cannot open %s\n", core->log_file);
        return -1;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    struct daemon d = {0};
    const char *role = NULL;
    char **flags = xcalloc((size_t)argc + 1, sizeof(char *));
    char **cmd = xcalloc((size_t)argc + 1, sizeof(char *));
    int nflags = 0, ncmd = 0, rc = EX_USAGE;

    const struct conf_module *mods[ARRAY_SIZE(roles) + 1] = {&core_conf_module};
    for (size_t i = 0; i < ARRAY_SIZE(roles); i++) {
        mods[i + 1] = roles[i]->conf;
    }
    d.conf = conf_new(mods, ARRAY_SIZE(mods));

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            rc = EX_OK;
            goto out;
        } else if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            printf("chanced %s\n", CHANCED_VERSION);
            rc = EX_OK;
            goto out;
        } else if (strncmp(a, "--role=", 7) == 0) {
            role = a + 7;
        } else if (strncmp(a, "--config=", 9) == 0) {
            d.config_path = a + 9;
        } else if (strcmp(a, "--check-config") == 0) {
            cmd[ncmd++] = "config";
            cmd[ncmd++] = "check";
        } else if (ncmd > 0) {
            /* After a subcommand, known keys still configure; the rest is the command's. */
            const char *eq = strchr(a, '=');
            char *key =
                eq && a[0] == '-' && a[1] == '-' ? xstrndup(a + 2, (size_t)(eq - a - 2)) : NULL;
            if (key && conf_has_key(d.conf, key)) {
                flags[nflags++] = argv[i];
            } else {
                cmd[ncmd++] = argv[i];
            }
            free(key);
        } else if (a[0] == '-' && a[1] == '-' && strchr(a, '=')) {
            flags[nflags++] = argv[i];
        } else if (a[0] != '-') {
            cmd[ncmd++] = argv[i];
        } else {
            fprintf(stderr, "chanced: unknown option %s (want --key=value)\n", a);
            usage(stderr);
            goto out;
        }
    }

    if (role == NULL && getenv("CHANCED_ROLE") && *getenv("CHANCED_ROLE")) {
        role = getenv("CHANCED_ROLE"); /* containers: the same image, the role from the env */
    }
    char err[512];
    if (conf_load(d.conf, d.config_path, environ, nflags, flags, err, sizeof(err)) != 0) {
        fprintf(stderr, "chanced: config error: %s\n", err);
        rc = EX_CONFIG;
        goto out;
    }
    if (apply_logging(d.conf) != 0) {
        rc = EX_CONFIG;
        goto out;
    }
    for (const char *const *u = conf_unknown_env(d.conf); u && *u; u++) {
        log_warn("unknown_env_key", "name=%s hint=\"not a chanced key; ignored\"", *u);
    }

    if (ncmd > 0) {
        if (strcmp(cmd[0], "config") == 0 && ncmd == 2 && strcmp(cmd[1], "check") == 0) {
            conf_dump(d.conf, stdout);
            printf("# config ok\n");
            rc = EX_OK;
            goto out;
        }
        if (strcmp(cmd[0], "healthcheck") == 0 && ncmd == 1) {
            if (role == NULL || select_roles(&d, role) != 0) {
                fprintf(stderr, "chanced: healthcheck needs --role (or CHANCED_ROLE)\n");
                goto out;
            }
            rc = healthcheck(&d);
            goto out;
        }
        if (strcmp(cmd[0], "config") == 0 && ncmd == 2 && strcmp(cmd[1], "markdown") == 0) {
            conf_dump_markdown(d.conf, stdout);
            rc = EX_OK;
            goto out;
        }
        for (size_t i = 0; i < ARRAY_SIZE(roles); i++) {
            if (roles[i]->command && (rc = roles[i]->command(d.conf, ncmd, cmd)) >= 0) {
                goto out;
            }
        }
        fprintf(stderr, "chanced: unknown command '%s'\n", cmd[0]);
        usage(stderr);
        rc = EX_USAGE;
        goto out;
    }

    if (role == NULL) {
        fprintf(stderr, "chanced: --role is required\n");
        usage(stderr);
        goto out;
    }
    if (select_roles(&d, role) != 0) {
        fprintf(stderr, "chanced: unknown role '%s' (want gateway, chance, logger or all)\n", role);
        goto out;
    }
    d.flags = flags;
    d.nflags = nflags;
    rc = run_roles(&d);

out:
    conf_free(d.conf);
    free(flags);
    free(cmd);
    return rc;
}
