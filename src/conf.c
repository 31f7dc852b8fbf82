/* Key-table configuration: defaults, INI file (libinih), environment, flags, validation, dump. */
#include "conf.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct conf_slot {
    const struct conf_module *module; /* borrowed static table */
    void *data;                       /* owned module struct */
    const char **sources;             /* per key: "default", "file", "env", "flag" */
};

struct conf {
    struct conf_slot *slots; /* one per module */
    size_t nslots;
    char **unknown_env; /* CHANCED_* names that matched no key, NULL-terminated */
    size_t nunknown;
};

struct file_ctx {
    struct conf *conf;
    char *err;
    size_t errlen;
    int failed;
};

static void normalise_key(const char *in, char *out, size_t size);
static int set_in_slot(struct conf_slot *s, size_t k, const char *value, const char *source,
                       char *err, size_t errlen);
static int read_secret_file(const char *path, char **out);

struct conf *
conf_new(const struct conf_module *const *modules, size_t nmodules)
{
    struct conf *conf = xcalloc(1, sizeof(*conf));
    conf->slots = xcalloc(nmodules, sizeof(*conf->slots));
    conf->nslots = nmodules;
    for (size_t i = 0; i < nmodules; i++) {
        for (size_t k = 0; k < modules[i]->nkeys; k++) {
            /* One owner per key: a key in two tables would be set twice and shown twice. */
            for (size_t j = 0; j < i; j++) {
                for (size_t l = 0; l < modules[j]->nkeys; l++) {
                    if (strcmp(modules[i]->keys[k].name, modules[j]->keys[l].name) == 0) {
                        fprintf(stderr, "chanced: key %s is defined by modules %s and %s\n",
                                modules[i]->keys[k].name, modules[j]->name, modules[i]->name);
                        abort();
                    }
                }
            }
        }
    }
    for (size_t i = 0; i < nmodules; i++) {
        struct conf_slot *s = &conf->slots[i];
        s->module = modules[i];
        s->data = xcalloc(1, modules[i]->size);
        s->sources = xcalloc(modules[i]->nkeys ? modules[i]->nkeys : 1, sizeof(char *));
        for (size_t k = 0; k < modules[i]->nkeys; k++) {
            char err[256];
            const struct conf_key *key = &modules[i]->keys[k];
            /* A default that fails its own validation is a programming error. */
            if (set_in_slot(s, k, key->def ? key->def : "", "default", err, sizeof(err)) != 0) {
                fprintf(stderr, "chanced: bad default: %s\n", err);
                abort();
            }
        }
    }
    return conf;
}

void
conf_free(struct conf *conf)
{
    if (conf == NULL) {
        return;
    }
    for (size_t i = 0; i < conf->nslots; i++) {
        struct conf_slot *s = &conf->slots[i];
        for (size_t k = 0; k < s->module->nkeys; k++) {
            const struct conf_key *key = &s->module->keys[k];
            if (key->type == CONF_STR) {
                char **p = (char **)((char *)s->data + key->offset);
                if (*p && (key->flags & CONF_SECRET)) {
                    util_wipe(*p, strlen(*p));
                }
                free(*p);
            }
        }
        free(s->sources);
        free(s->data);
    }
    for (size_t i = 0; i < conf->nunknown; i++) {
        free(conf->unknown_env[i]);
    }
    free(conf->unknown_env);
    free(conf->slots);
    free(conf);
}

static void
normalise_key(const char *in, char *out, size_t size)
{
    size_t i = 0;
    for (; in[i] && i + 1 < size; i++) {
        out[i] = in[i] == '-' ? '_' : (char)tolower((unsigned char)in[i]);
    }
    out[i] = '\0';
}

static int
parse_bool(const char *v, bool *out)
{
    static const char *yes[] = {"1", "true", "yes", "on"};
    static const char *no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

static int
set_in_slot(struct conf_slot *s, size_t k, const char *value, const char *source, char *err,
            size_t errlen)
{
    const struct conf_key *key = &s->module->keys[k];
    void *field = (char *)s->data + key->offset;
    const char *why = NULL;

    if (key->check != NULL && (why = key->check(value)) != NULL) {
        goto fail;
    }
    switch (key->type) {
    case CONF_STR: {
        char **p = field;
        free(*p);
        *p = xstrdup(value);
        break;
    }
    case CONF_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0') {
            why = "not an integer";
            goto fail;
        }
        if (v < key->min || v > key->max) {
            snprintf(err, errlen, "%s (from %s): %lld is out of range [%lld, %lld]", key->name,
                     source, v, key->min, key->max);
            return -1;
        }
        *(long long *)field = v;
        break;
    }
    case CONF_BOOL:
        if (parse_bool(value, field) != 0) {
            why = "not a boolean (true/false)";
            goto fail;
        }
        break;
    }
    s->sources[k] = source;
    return 0;

fail:
    snprintf(err, errlen, "%s (from %s): %s", key->name, source, why);
    return -1;
}

#define SECRET_MAX 65536

static int
read_secret_file(const char *path, char **out)
{
    FILE *f = fopen(path, "r");
    struct stat st;
    if (f == NULL) {
        return -1;
    }
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > SECRET_MAX) {
        fclose(f);
        errno = S_ISDIR(st.st_mode) ? EISDIR : EFBIG;
        return -1;
    }
    struct sbuf b = {0};
    char chunk[512];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 && b.len <= SECRET_MAX) {
        sbuf_append(&b, chunk, n);
    }
    util_wipe(chunk, sizeof(chunk));
    int failed = ferror(f);
    fclose(f);
    if (failed || b.len > SECRET_MAX) {
        if (b.data) {
            util_wipe(b.data, b.len);
        }
        sbuf_cleanup(&b);
        errno = failed ? EIO : EFBIG;
        return -1;
    }
    while (b.len > 0 && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r')) {
        b.data[--b.len] = '\0';
    }
    *out = sbuf_steal(&b);
    return 0;
}

int
conf_set(struct conf *conf, const char *rawkey, const char *value, const char *source, char *err,
         size_t errlen)
{
    char key[128];
    normalise_key(rawkey, key, sizeof(key));
    size_t klen = strlen(key);
    bool from_file = klen > 5 && strcmp(key + klen - 5, "_file") == 0;
    int found = 0;

    for (size_t i = 0; i < conf->nslots; i++) {
        struct conf_slot *s = &conf->slots[i];
        for (size_t k = 0; k < s->module->nkeys; k++) {
            const struct conf_key *ck = &s->module->keys[k];
            if (strcmp(ck->name, key) == 0) {
                found = 1;
                if (set_in_slot(s, k, value, source, err, errlen) != 0) {
                    return -1;
                }
            } else if (from_file && (ck->flags & CONF_SECRET) && strlen(ck->name) == klen - 5 &&
                       strncmp(ck->name, key, klen - 5) == 0) {
                char *secret;
                found = 1;
                if (read_secret_file(value, &secret) != 0) {
                    snprintf(err, errlen, "%s (from %s): cannot read %s: %s", key, source, value,
                             strerror(errno));
                    return -1;
                }
                int rc = set_in_slot(s, k, secret, source, err, errlen);
                util_wipe(secret, strlen(secret));
                free(secret);
                if (rc != 0) {
                    return -1;
                }
            }
        }
    }
    if (!found) {
        snprintf(err, errlen, "%s (from %s): unknown key", key, source);
        return -1;
    }
    return 0;
}

static int
on_ini_pair(void *user, const char *section, const char *name, const char *value)
{
    struct file_ctx *ctx = user;
    UNUSED(section);
    if (ctx->failed) {
        return 0;
    }
    if (conf_set(ctx->conf, name, value, "file", ctx->err, ctx->errlen) != 0) {
        ctx->failed = 1;
        return 0;
    }
    return 1;
}

static int
apply_env(struct conf *conf, char **envp, char *err, size_t errlen)
{
    static const char prefix[] = "CHANCED_";
    for (char **e = envp; e && *e; e++) {
        if (strncmp(*e, prefix, sizeof(prefix) - 1) != 0) {
            continue;
        }
        const char *eq = strchr(*e, '=');
        if (eq == NULL) {
            continue;
        }
        char key[128];
        size_t n = (size_t)(eq - *e) - (sizeof(prefix) - 1);
        if (n == 0 || n >= sizeof(key)) {
            continue;
        }
        memcpy(key, *e + sizeof(prefix) - 1, n);
        key[n] = '\0';
        /* The environment is shared with other programs: skip what is not ours (CHANCED_TEST_*). */
        char probe[256];
        int rc = conf_set(conf, key, eq + 1, "env", probe, sizeof(probe));
        if (rc != 0 && strstr(probe, "unknown key") == NULL) {
            snprintf(err, errlen, "%s", probe);
            return -1;
        }
        if (rc != 0 && strcmp(key, "ROLE") != 0 && strncmp(key, "TEST_", 5) != 0) {
            conf->unknown_env = xrealloc(conf->unknown_env, (conf->nunknown + 2) * sizeof(char *));
            conf->unknown_env[conf->nunknown++] = xstrndup(*e, (size_t)(eq - *e));
            conf->unknown_env[conf->nunknown] = NULL;
        }
    }
    return 0;
}

const char *const *
conf_unknown_env(const struct conf *conf)
{
    return (const char *const *)conf->unknown_env;
}

/* systemd's LoadCredential= puts each secret in $CREDENTIALS_DIRECTORY/<name>. */
static int
apply_credentials(struct conf *conf, char *err, size_t errlen)
{
    const char *dir = getenv("CREDENTIALS_DIRECTORY");
    if (dir == NULL || *dir == '\0') {
        return 0;
    }
    for (size_t i = 0; i < conf->nslots; i++) {
        const struct conf_module *m = conf->slots[i].module;
        for (size_t k = 0; k < m->nkeys; k++) {
            if (!(m->keys[k].flags & CONF_SECRET)) {
                continue;
            }
            char path[4096], key[160];
            snprintf(path, sizeof(path), "%s/%s", dir, m->keys[k].name);
            if (access(path, F_OK) != 0) {
                continue;
            }
            snprintf(key, sizeof(key), "%s_file", m->keys[k].name);
            if (conf_set(conf, key, path, "credential", err, errlen) != 0) {
                return -1;
            }
        }
    }
    return 0;
}

int
conf_load(struct conf *conf, const char *path, char **envp, int argc, char **argv, char *err,
          size_t errlen)
{
    if (path != NULL) {
        struct file_ctx ctx = {conf, err, errlen, 0};
        int rc = ini_parse(path, on_ini_pair, &ctx);
        if (ctx.failed) {
            /* inih returns the line whose handler call failed */
            size_t n = strlen(err);
            snprintf(err + n, errlen - n, " at %s:%d", path, rc);
            return -1;
        }
        if (rc < 0) {
            snprintf(err, errlen, "cannot open config file %s: %s", path, strerror(errno));
            return -1;
        }
        if (rc > 0) {
            snprintf(err, errlen, "%s:%d: syntax error", path, rc);
            return -1;
        }
    }
    if (apply_credentials(conf, err, errlen) != 0 || apply_env(conf, envp, err, errlen) != 0) {
        return -1;
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || strchr(a, '=') == NULL) {
            snprintf(err, errlen, "%s: expected --key=value", a);
            return -1;
        }
        const char *eq = strchr(a, '=');
        char *key = xstrndup(a + 2, (size_t)(eq - a - 2));
        int rc = conf_set(conf, key, eq + 1, "flag", err, errlen);
        free(key);
        if (rc != 0) {
            return -1;
        }
    }
    return conf_validate(conf, err, errlen);
}

int
conf_validate(struct conf *conf, char *err, size_t errlen)
{
    for (size_t i = 0; i < conf->nslots; i++) {
        const struct conf_module *m = conf->slots[i].module;
        const char *why;
        if (m->validate != NULL && (why = m->validate(conf->slots[i].data)) != NULL) {
            snprintf(err, errlen, "%s", why);
            return -1;
        }
    }
    return 0;
}

const char *
conf_get_str(const struct conf *conf, const char *key)
{
    for (size_t i = 0; i < conf->nslots; i++) {
        const struct conf_module *m = conf->slots[i].module;
        for (size_t k = 0; k < m->nkeys; k++) {
            if (m->keys[k].type == CONF_STR && strcmp(m->keys[k].name, key) == 0) {
                return *(char *const *)((const char *)conf->slots[i].data + m->keys[k].offset);
            }
        }
    }
    return NULL;
}

bool
conf_has_key(const struct conf *conf, const char *rawkey)
{
    char key[128];
    normalise_key(rawkey, key, sizeof(key));
    for (size_t i = 0; i < conf->nslots; i++) {
        for (size_t k = 0; k < conf->slots[i].module->nkeys; k++) {
            if (strcmp(conf->slots[i].module->keys[k].name, key) == 0) {
                return true;
            }
        }
    }
    return false;
}

const void *
conf_module_data(const struct conf *conf, const char *module)
{
    for (size_t i = 0; i < conf->nslots; i++) {
        if (strcmp(conf->slots[i].module->name, module) == 0) {
            return conf->slots[i].data;
        }
    }
    return NULL;
}

static bool
same_value(const struct conf_key *key, const void *a, const void *b)
{
    const void *fa = (const char *)a + key->offset, *fb = (const char *)b + key->offset;
    switch (key->type) {
    case CONF_STR: return strcmp(*(char *const *)fa, *(char *const *)fb) == 0;
    case CONF_INT: return *(const long long *)fa == *(const long long *)fb;
    case CONF_BOOL: return *(const bool *)fa == *(const bool *)fb;
    }
    return true;
}

size_t
conf_changed(const struct conf *a, const struct conf *b, conf_change_fn fn, void *arg)
{
    size_t n = 0;
    for (size_t i = 0; i < a->nslots && i < b->nslots; i++) {
        const struct conf_module *m = a->slots[i].module;
        for (size_t k = 0; k < m->nkeys; k++) {
            const struct conf_key *key = &m->keys[k];
            if (!same_value(key, a->slots[i].data, b->slots[i].data)) {
                n++;
                if (fn) {
                    fn(key->name, (key->flags & CONF_RELOAD) != 0, arg);
                }
            }
        }
    }
    return n;
}

static void
format_value(const struct conf_key *key, const void *data, char *buf, size_t size)
{
    const void *field = (const char *)data + key->offset;
    switch (key->type) {
    case CONF_STR: {
        const char *v = *(char *const *)field;
        snprintf(buf, size, "%s", (key->flags & CONF_SECRET) && v && *v ? "(redacted)" : v);
        break;
    }
    case CONF_INT: snprintf(buf, size, "%lld", *(const long long *)field); break;
    case CONF_BOOL: snprintf(buf, size, "%s", *(const bool *)field ? "true" : "false"); break;
    }
}

void
conf_dump(const struct conf *conf, FILE *out)
{
    for (size_t i = 0; i < conf->nslots; i++) {
        const struct conf_slot *s = &conf->slots[i];
        fprintf(out, "# %s\n", s->module->name);
        for (size_t k = 0; k < s->module->nkeys; k++) {
            char buf[512];
            format_value(&s->module->keys[k], s->data, buf, sizeof(buf));
            fprintf(out, "%s = %s  # %s\n", s->module->keys[k].name, buf, s->sources[k]);
        }
    }
}

void
conf_dump_markdown(const struct conf *conf, FILE *out)
{
    fprintf(out, "| key | default | module | description |\n|---|---|---|---|\n");
    for (size_t i = 0; i < conf->nslots; i++) {
        const struct conf_module *m = conf->slots[i].module;
        for (size_t k = 0; k < m->nkeys; k++) {
            const struct conf_key *key = &m->keys[k];
            const char *def = key->def && *key->def ? key->def : "";
            fprintf(out, "| `%s` | %s%s%s | %s | %s%s%s |\n", key->name, *def ? "`" : "", def,
                    *def ? "`" : "", m->name, key->help ? key->help : "",
                    key->flags & CONF_SECRET ? " Secret; `" : "",
                    key->flags & CONF_SECRET ? "_file` variant reads it from a file." : "");
        }
    }
}

const char *
conf_check_hostport(const char *value)
{
    char *host;
    int port;
    if (util_parse_hostport(value, &host, &port) != 0) {
        return "expected host:port";
    }
    free(host);
    return NULL;
}

const char *
conf_check_hostport_list(const char *value)
{
    char *copy = xstrdup(value), *save = NULL;
    const char *why = NULL;
    int n = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok && !why; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') {
            tok++;
        }
        why = conf_check_hostport(tok) ? "expected host:port[,host:port...]" : NULL;
        n++;
    }
    free(copy);
    return why ? why : n == 0 ? "expected host:port[,host:port...]" : NULL;
}

static const char *
check_scheme(const char *value, const char *const *schemes, const char *why)
{
    if (*value == '\0') {
        return NULL; /* unset: the role that needs it says so */
    }
    for (; *schemes; schemes++) {
        if (strncmp(value, *schemes, strlen(*schemes)) == 0) {
            return NULL;
        }
    }
    return why;
}

const char *
conf_check_url_redis(const char *value)
{
    static const char *const s[] = {"redis://", "rediss://", "unix://", NULL};
    return check_scheme(value, s,
                        "expected redis://[user:password@]host:port[,host:port...]/db, "
                        "rediss://... (TLS) or unix:///path");
}

const char *
conf_check_url_postgres(const char *value)
{
    static const char *const s[] = {"postgresql://", "postgres://", NULL};
    return check_scheme(value, s, "expected postgresql://user@host:port[,host:port...]/db");
}

const char *
conf_check_url_amqp(const char *value)
{
    static const char *const s[] = {"amqp://", "amqps://", NULL};
    /* A comma-separated list of nodes: every element is a URL of its own. */
    for (const char *p = value; *p;) {
        const char *why = check_scheme(p, s,
                                       "expected amqp://user:pass@host:port/vhost (or amqps://), "
                                       "several separated by commas");
        if (why) {
            return why;
        }
        const char *comma = strchr(p, ',');
        if (comma == NULL) {
            break;
        }
        p = comma + 1;
        while (*p == ' ') {
            p++;
        }
        if (*p == '\0') {
            return "empty element after a comma";
        }
    }
    return NULL;
}

const char *
conf_check_url_mongo(const char *value)
{
    static const char *const s[] = {"mongodb://", "mongodb+srv://", NULL};
    return check_scheme(value, s,
                        "expected mongodb://host:port[,host:port...]/db or "
                        "mongodb+srv://host/db");
}

const char *
conf_check_queue_name(const char *value)
{
    size_t n = 0;
    for (; value[n]; n++) {
        char c = value[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-')) {
            return "queue names use letters, digits, '.', '_' and '-'";
        }
    }
    return n == 0 || n > 200 ? "expected 1 to 200 characters" : NULL;
}
