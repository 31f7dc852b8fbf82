/*
 * chanced: argv -> conf -> log -> a subcommand, or the selected roles handed to the runtime
 * (runtime.h), which runs each on its own thread and loop until a signal stops them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "core_conf.h"
#include "rmq_conf.h"
#include "log.h"
#include "role.h"
#include "rpc_client.h"
#include "rpc_server.h"
#include "runtime.h"
#include "util.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#ifndef CHANCED_VERSION
#define CHANCED_VERSION "0.0.0-dev"
#endif

#define EX_OK RUNTIME_EX_OK
#define EX_FAIL RUNTIME_EX_FAIL
#define EX_USAGE RUNTIME_EX_USAGE
#define EX_CONFIG RUNTIME_EX_CONFIG

extern char **environ;

static const struct role *const roles[] = {&role_gateway, &role_chance, &role_logger};

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

/* One GET /readyz on an address with a short deadline; 0 if it answered 200. */
static int
probe_one(const struct sockaddr *sa, socklen_t len)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    struct timeval tv = {3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    char buf[256];
    int ok = -1;
    if (connect(fd, sa, len) == 0) {
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

/*
 * GET http://addr/readyz; 0 if it answered 200. A wildcard listener (0.0.0.0, ::) is reached
 * through the loopback of its family; a name is resolved and each address tried.
 */
static int
probe_ready(const char *addr)
{
    char *host, service[16];
    int port;
    if (addr == NULL || util_parse_hostport(addr, &host, &port) != 0) {
        return -1;
    }
    const char *target = host;
    if (strcmp(host, "0.0.0.0") == 0 || host[0] == '\0') {
        target = "127.0.0.1";
    } else if (strcmp(host, "::") == 0) {
        target = "::1";
    }
    snprintf(service, sizeof(service), "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int ok = -1;
    if (getaddrinfo(target, service, &hints, &res) == 0) {
        for (struct addrinfo *ai = res; ai && ok != 0; ai = ai->ai_next) {
            ok = probe_one(ai->ai_addr, ai->ai_addrlen);
        }
        freeaddrinfo(res);
    }
    free(host);
    return ok;
}

/* chanced healthcheck: probes /readyz of each selected role; exit 0 only if all are ready. */
static int
healthcheck(const struct runtime_opts *o)
{
    int rc = EX_OK;
    for (size_t i = 0; i < o->nroles; i++) {
        const struct role *r = o->roles[i];
        const char *addr = r->health_key ? conf_get_str(o->conf, r->health_key) : NULL;
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
select_roles(struct runtime_opts *o, const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(roles); i++) {
        if (strcmp(name, "all") == 0 || strcmp(name, roles[i]->name) == 0) {
            o->roles[o->nroles++] = roles[i];
        }
    }
    return o->nroles > 0 ? 0 : -1;
}

/* The internal links' TLS settings of the selected roles, before any starts (rpc_server.h). */
static int
check_rpc_links(const struct runtime_opts *o, char *err, size_t errlen)
{
    const struct core_conf *core = conf_module_data(o->conf, "core");
    for (size_t i = 0; i < o->nroles; i++) {
        const struct role *r = o->roles[i];
        const char *key = r->rpc_listen_key;
        if (key && rpc_server_check_conf(core, key, conf_get_str(o->conf, key), o->nroles > 1, err,
                                         errlen) != 0) {
            return -1;
        }
        for (const char *const *k = r->rpc_peer_keys; k && *k; k++) {
            if (rpc_client_check_conf(core, *k, conf_get_str(o->conf, *k), err, errlen) != 0) {
                return -1;
            }
        }
    }
    return 0;
}

static int
apply_logging(const struct conf *conf)
{
    const struct core_conf *core = conf_module_data(conf, "core");
    log_set_level(log_parse_level(core->log_level));
    if (log_set_format(core->log_format) != 0) {
        return -1;
    }
    if (*core->log_file && log_open_file(core->log_file) != 0) {
        fprintf(stderr, "chanced: log_file: cannot open %s\n", core->log_file);
        return -1;
    }
    return 0;
}

/* The command line, sorted: configuration flags, a subcommand and its words, the role. */
struct cmdline {
    const char *role; /* --role, or CHANCED_ROLE, or NULL */
    char **flags;     /* --key=value arguments (borrowed from argv) */
    char **cmd;       /* the subcommand and its own arguments */
    int nflags, ncmd;
    int exit_now; /* >= 0: --help, --version or a usage error decided the exit code */
};

static void
parse_argv(int argc, char **argv, struct runtime_opts *d, struct cmdline *cl)
{
    cl->exit_now = -1;
    for (int i = 1; i < argc && cl->exit_now < 0; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            cl->exit_now = EX_OK;
        } else if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            printf("chanced %s\n", CHANCED_VERSION);
            cl->exit_now = EX_OK;
        } else if (strncmp(a, "--role=", 7) == 0) {
            cl->role = a + 7;
        } else if (strncmp(a, "--config=", 9) == 0) {
            d->config_path = a + 9;
        } else if (strcmp(a, "--check-config") == 0) {
            cl->cmd[cl->ncmd++] = "config";
            cl->cmd[cl->ncmd++] = "check";
        } else if (cl->ncmd > 0) {
            /* After a subcommand, known keys still configure; the rest is the command's. */
            const char *eq = strchr(a, '=');
            char *key =
                eq && a[0] == '-' && a[1] == '-' ? xstrndup(a + 2, (size_t)(eq - a - 2)) : NULL;
            if (key && conf_has_key(d->conf, key)) {
                cl->flags[cl->nflags++] = argv[i];
            } else {
                cl->cmd[cl->ncmd++] = argv[i];
            }
            free(key);
        } else if (a[0] == '-' && a[1] == '-' && strchr(a, '=')) {
            cl->flags[cl->nflags++] = argv[i];
        } else if (a[0] != '-') {
            cl->cmd[cl->ncmd++] = argv[i];
        } else {
            fprintf(stderr, "chanced: unknown option %s (want --key=value)\n", a);
            usage(stderr);
            cl->exit_now = EX_USAGE;
        }
    }
    if (cl->role == NULL && getenv("CHANCED_ROLE") && *getenv("CHANCED_ROLE")) {
        cl->role = getenv("CHANCED_ROLE"); /* containers: the same image, the role from the env */
    }
}

/* config check | config markdown | healthcheck | a role's own commands. */
static int
run_command(struct runtime_opts *d, const struct cmdline *cl)
{
    char **cmd = cl->cmd;
    if (strcmp(cmd[0], "config") == 0 && cl->ncmd == 2 && strcmp(cmd[1], "check") == 0) {
        conf_dump(d->conf, stdout);
        printf("# config ok\n");
        return EX_OK;
    }
    if (strcmp(cmd[0], "config") == 0 && cl->ncmd == 2 && strcmp(cmd[1], "markdown") == 0) {
        conf_dump_markdown(d->conf, stdout);
        return EX_OK;
    }
    if (strcmp(cmd[0], "healthcheck") == 0 && cl->ncmd == 1) {
        if (cl->role == NULL || select_roles(d, cl->role) != 0) {
            fprintf(stderr, "chanced: healthcheck needs --role (or CHANCED_ROLE)\n");
            return EX_USAGE;
        }
        return healthcheck(d);
    }
    for (size_t i = 0; i < ARRAY_SIZE(roles); i++) {
        int rc;
        if (roles[i]->command && (rc = roles[i]->command(d->conf, cl->ncmd, cmd)) >= 0) {
            return rc;
        }
    }
    fprintf(stderr, "chanced: unknown command '%s'\n", cmd[0]);
    usage(stderr);
    return EX_USAGE;
}

int
main(int argc, char **argv)
{
    struct cmdline cl = {.flags = xcalloc((size_t)argc + 1, sizeof(char *)),
                         .cmd = xcalloc((size_t)argc + 1, sizeof(char *))};
    int rc = EX_USAGE;

    /* Every key table of the binary, core first: one key belongs to exactly one of them. */
    const struct conf_module *mods[ARRAY_SIZE(roles) + 2] = {&core_conf_module, &rmq_conf_module};
    for (size_t i = 0; i < ARRAY_SIZE(roles); i++) {
        mods[i + 2] = roles[i]->conf;
    }
    struct runtime_opts d = {.modules = mods, .nmodules = ARRAY_SIZE(mods)};
    d.conf = conf_new(mods, ARRAY_SIZE(mods));
    parse_argv(argc, argv, &d, &cl);
    if (cl.exit_now >= 0) {
        rc = cl.exit_now;
        goto out;
    }
    char err[512];
    if (conf_load(d.conf, d.config_path, environ, cl.nflags, cl.flags, err, sizeof(err)) != 0) {
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
    if (cl.ncmd > 0) {
        rc = run_command(&d, &cl);
    } else if (cl.role == NULL) {
        fprintf(stderr, "chanced: --role is required\n");
        usage(stderr);
    } else if (select_roles(&d, cl.role) != 0) {
        fprintf(stderr, "chanced: unknown role '%s' (want gateway, chance, logger or all)\n",
                cl.role);
    } else if (check_rpc_links(&d, err, sizeof(err)) != 0) {
        fprintf(stderr, "chanced: config error: %s\n", err);
        rc = EX_CONFIG;
    } else {
        d.flags = cl.flags;
        d.nflags = cl.nflags;
        rc = runtime_run(&d);
    }
out:
    conf_free(d.conf);
    free(cl.flags);
    free(cl.cmd);
    return rc;
}
