/*
 * Unit tests of the config engine over a small key table of the test's own: the table-driven
 * cases in test/data/conf/cases.txt (precedence, bounds, spelling, booleans, secrets, INI), then
 * secret values, dumps, reload and the stock validators.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "core_conf.h"
#include "harness.h"

struct tmod {
    char *name;        /* plain string */
    long long port;    /* bounded int */
    bool verbose;      /* bool */
    char *password;    /* secret */
    char *level;       /* validated string */
    long long workers; /* reloadable int */
    long long min_len; /* cross-checked with max_len */
    long long max_len; /* ... */
    bool debug;        /* reloadable bool */
};

struct omod {
    char *api_token; /* secret in a second module */
    bool other_flag; /* bool defaulting to "on" */
};

static const char *
check_level(const char *v)
{
    return strcmp(v, "info") == 0 || strcmp(v, "debug") == 0 ? NULL : "expected info or debug";
}

static const char *
validate_tmod(const void *data)
{
    const struct tmod *t = data;
    return t->min_len > t->max_len ? "min_len must not exceed max_len" : NULL;
}

#define TK(name, type, def, lo, hi, check, flags)                                                  \
    {                                                                                              \
#name, type, def, offsetof(struct tmod, name), lo, hi, check, flags, "help for " #name     \
    }

static const struct conf_key tkeys[] = {
    TK(name, CONF_STR, "anon", 0, 0, NULL, 0),
    TK(port, CONF_INT, "8080", 1, 65535, NULL, 0),
    TK(verbose, CONF_BOOL, "false", 0, 0, NULL, 0),
    TK(password, CONF_STR, "", 0, 0, NULL, CONF_SECRET),
    TK(level, CONF_STR, "info", 0, 0, check_level, CONF_RELOAD),
    TK(workers, CONF_INT, "4", 1, 64, NULL, CONF_RELOAD),
    TK(min_len, CONF_INT, "1", 0, 100, NULL, 0),
    TK(max_len, CONF_INT, "10", 0, 100, NULL, 0),
    TK(debug, CONF_BOOL, "no", 0, 0, NULL, CONF_RELOAD),
};

static const struct conf_key okeys[] = {
    {"api_token", CONF_STR, "", offsetof(struct omod, api_token), 0, 0, NULL, CONF_SECRET, "token"},
    {"other_flag", CONF_BOOL, "on", offsetof(struct omod, other_flag), 0, 0, NULL, 0, "flag"},
};

static const struct conf_module tmodule = {"test", tkeys, ARRAY_SIZE(tkeys), sizeof(struct tmod),
                                           validate_tmod};
static const struct conf_module omodule = {"other", okeys, ARRAY_SIZE(okeys), sizeof(struct omod),
                                           NULL};
static const struct conf_module *const modules[] = {&tmodule, &omodule};

/* Scratch files for the placeholders. */
static char tmpdir[64];
static char path_secret[128], path_crlf[128], path_empty[128], path_dir[128];

static void
write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL, "cannot create %s", path);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void
cleanup_scratch(void)
{
    unlink(path_secret);
    unlink(path_crlf);
    unlink(path_empty);
    rmdir(path_dir);
    char p[160];
    snprintf(p, sizeof(p), "%s/case.ini", tmpdir);
    unlink(p);
    rmdir(tmpdir);
}

static void
make_scratch(void)
{
    if (tmpdir[0]) {
        return;
    }
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/chanced-test-conf-XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp");
    snprintf(path_secret, sizeof(path_secret), "%s/secret", tmpdir);
    snprintf(path_crlf, sizeof(path_crlf), "%s/crlf", tmpdir);
    snprintf(path_empty, sizeof(path_empty), "%s/empty", tmpdir);
    snprintf(path_dir, sizeof(path_dir), "%s/dir", tmpdir);
    write_file(path_secret, "hunter2\n");
    write_file(path_crlf, "s3cret\r\n");
    write_file(path_empty, "");
    CHECK(mkdir(path_dir, 0700) == 0, "mkdir %s", path_dir);
    atexit(cleanup_scratch);
}

/* Replaces placeholders and "\n" escapes; returns a new string. */
static char *
expand(const char *in)
{
    static const struct {
        const char *from;
        const char *to;
    } subst[] = {{"@SECRET@", path_secret}, {"@CRLF@", path_crlf}, {"@EMPTY@", path_empty},
                 {"@DIR@", path_dir},       {"\\n", "\n"},         {"\\s", " "}};
    struct sbuf b = {0};
    while (*in) {
        size_t i = 0;
        for (; i < ARRAY_SIZE(subst); i++) {
            size_t n = strlen(subst[i].from);
            if (strncmp(in, subst[i].from, n) == 0) {
                sbuf_appends(&b, subst[i].to);
                in += n;
                break;
            }
        }
        if (i == ARRAY_SIZE(subst)) {
            sbuf_append(&b, in++, 1);
        }
    }
    return sbuf_steal(&b);
}

/* Splits s (modified) at spaces into at most max words; returns the count. */
static int
split_words(char *s, char **words, int max)
{
    int n = 0;
    for (char *tok = strtok(s, " "); tok && n < max; tok = strtok(NULL, " ")) {
        words[n++] = tok;
    }
    return n;
}

static char *
dump_to_string(const struct conf *conf)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    conf_dump(conf, f);
    fclose(f);
    return text;
}

/* Checks "key=value@source" against conf_dump's "key = value  # source" lines. */
static void
check_dumped(const char *label, const char *dump, const char *expect_tok)
{
    char *tok = expand(expect_tok);
    char *eq = strchr(tok, '='), *at = strrchr(tok, '@');
    CHECK(eq && at && at > eq, "%s: bad expectation '%s'", label, expect_tok);
    if (eq && at && at > eq) {
        *eq = '\0';
        *at = '\0';
        char *line = xasprintf("\n%s = %s  # %s\n", tok, eq + 1, at + 1);
        CHECK(strstr(dump, line) != NULL, "%s: no line '%s = %s  # %s' in dump:\n%s", label, tok,
              eq + 1, at + 1, dump);
        free(line);
    }
    free(tok);
}

static void
run_case(const char *label, char *fields[5], const char *where)
{
    struct conf *conf = conf_new(modules, ARRAY_SIZE(modules));
    char *path = NULL;
    if (strcmp(fields[0], "@missing") == 0) {
        path = xasprintf("%s/does-not-exist.ini", tmpdir);
    } else if (strcmp(fields[0], "-") != 0) {
        path = xasprintf("%s/case.ini", tmpdir);
        char *text = expand(fields[0]);
        write_file(path, text);
        free(text);
    }
    char *env_text = strcmp(fields[1], "-") ? expand(fields[1]) : xstrdup("");
    char *flag_text = strcmp(fields[2], "-") ? expand(fields[2]) : xstrdup("");
    char *envp[16] = {NULL}, *argv[16] = {NULL};
    split_words(env_text, envp, 15);
    int argc = split_words(flag_text, argv, 15);

    char err[512] = "";
    int rc = conf_load(conf, path, envp, argc, argv, err, sizeof(err));
    char *expect = xstrdup(fields[3]);
    if (strncmp(expect, "error ", 6) == 0) {
        CHECK(rc == -1, "%s (%s): loaded, want error '%s'", label, where, expect + 6);
        CHECK(rc == 0 || strstr(err, expect + 6) != NULL, "%s (%s): error '%s', want '%s'", label,
              where, err, expect + 6);
    } else if (strncmp(expect, "ok", 2) == 0) {
        CHECK(rc == 0, "%s (%s): error '%s'", label, where, err);
        if (rc == 0) {
            char *dump = dump_to_string(conf);
            char *toks[32];
            int n = split_words(expect + 2, toks, 32);
            for (int i = 0; i < n; i++) {
                check_dumped(label, dump, toks[i]);
            }
            free(dump);
        }
    } else {
        CHECK(0, "%s (%s): expectation must start with ok or error", label, where);
    }
    free(expect);
    free(env_text);
    free(flag_text);
    free(path);
    conf_free(conf);
}

static void
test_cases_file(void)
{
    make_scratch();
    const char *dir = getenv("CHANCED_TEST_DATA") ? getenv("CHANCED_TEST_DATA") : "test/data";
    char file[512];
    snprintf(file, sizeof(file), "%s/conf/cases.txt", dir);
    FILE *f = fopen(file, "r");
    CHECK(f != NULL, "cannot open %s (run from the project root)", file);
    if (f == NULL) {
        return;
    }
    char line[2048];
    int lineno = 0, ran = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '\0' || line[0] == '#') {
            continue;
        }
        char *fields[6] = {NULL};
        int n = 0;
        for (char *p = line; p && n < 6;) {
            char *sep = strstr(p, " | ");
            if (sep) {
                *sep = '\0';
            }
            fields[n++] = p;
            p = sep ? sep + 3 : NULL;
        }
        char where[600];
        snprintf(where, sizeof(where), "%s:%d", file, lineno);
        CHECK(n == 5, "%s: %d fields, want 5", where, n);
        if (n == 5) {
            run_case(fields[0], fields + 1, where);
            ran++;
        }
    }
    fclose(f);
    CHECK(ran >= 60, "only %d cases ran", ran);
}

static const struct tmod *
tdata(const struct conf *conf)
{
    return conf_module_data(conf, "test");
}

static void
test_secret_values(void)
{
    make_scratch();
    struct conf *conf = conf_new(modules, ARRAY_SIZE(modules));
    char *argv[] = {xasprintf("--password_file=%s", path_secret),
                    xasprintf("--api-token-file=%s", path_crlf)};
    char err[256] = "";
    CHECK(conf_load(conf, NULL, NULL, 2, argv, err, sizeof(err)) == 0, "load: %s", err);
    CHECK(strcmp(tdata(conf)->password, "hunter2") == 0, "password '%s' (newline kept?)",
          tdata(conf)->password);
    const struct omod *o = conf_module_data(conf, "other");
    CHECK(o && strcmp(o->api_token, "s3cret") == 0, "token '%s' (CR LF kept?)",
          o ? o->api_token : "(null)");
    char *dump = dump_to_string(conf);
    CHECK(strstr(dump, "hunter2") == NULL && strstr(dump, "s3cret") == NULL, "secret in dump:\n%s",
          dump);
    CHECK(strstr(dump, path_secret) == NULL, "secret path in dump:\n%s", dump);
    free(dump);

    /* A value set directly is redacted too, and never appears in an error message. */
    char pw[] = "--password=topsecret-42";
    char bad[] = "--port=0";
    char *argv2[] = {pw, bad};
    CHECK(conf_load(conf, NULL, NULL, 2, argv2, err, sizeof(err)) == -1, "port 0 accepted");
    CHECK(strstr(err, "topsecret") == NULL, "secret in error: %s", err);
    dump = dump_to_string(conf);
    CHECK(strstr(dump, "topsecret") == NULL, "direct secret in dump:\n%s", dump);
    free(dump);
    free(argv[0]);
    free(argv[1]);
    conf_free(conf);

    /* A file variant of a secret holding more than one line keeps the inner newline. */
    char *p = xasprintf("%s/multi", tmpdir);
    write_file(p, "line1\nline2\n\n");
    conf = conf_new(modules, ARRAY_SIZE(modules));
    CHECK(conf_set(conf, "password_file", p, "test", err, sizeof(err)) == 0, "set: %s", err);
    CHECK(strcmp(tdata(conf)->password, "line1\nline2") == 0, "multi-line secret '%s'",
          tdata(conf)->password);
    conf_free(conf);
    unlink(p);
    free(p);
}

static void
test_dump_format(void)
{
    struct conf *conf = conf_new(modules, ARRAY_SIZE(modules));
    char err[256];
    CHECK(conf_set(conf, "port", "81", "flag", err, sizeof(err)) == 0, "set: %s", err);
    char *dump = dump_to_string(conf);
    CHECK(strncmp(dump, "# test\n", 7) == 0, "dump starts: %.20s", dump);
    CHECK(strstr(dump, "\nport = 81  # flag\n") != NULL, "port line:\n%s", dump);
    CHECK(strstr(dump, "\n# other\n") != NULL, "module header:\n%s", dump);
    CHECK(strstr(dump, "\npassword =   # default\n") != NULL, "empty secret line:\n%s", dump);
    free(dump);

    char *md = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&md, &len);
    conf_dump_markdown(conf, f);
    fclose(f);
    CHECK(strstr(md, "| `port` | `8080` | test | help for port |") != NULL, "markdown:\n%s", md);
    CHECK(strstr(md, "| `password` |  | test | help for password Secret; `_file` variant") != NULL,
          "markdown lacks the _file note:\n%s", md);
    CHECK(strstr(md, "| `name` | `anon` | test | help for name |\n") != NULL, "plain row:\n%s", md);
    free(md);
    conf_free(conf);
}

static void
test_direct_api(void)
{
    struct conf *conf = conf_new(modules, ARRAY_SIZE(modules));
    char err[256];
    CHECK(conf_has_key(conf, "max-len") && conf_has_key(conf, "MAX_LEN"), "has_key spelling");
    CHECK(conf_has_key(conf, "api_token") && !conf_has_key(conf, "api_token_file"),
          "has_key secrets");
    CHECK(!conf_has_key(conf, "nope") && !conf_has_key(conf, ""), "has_key unknown");
    CHECK(conf_module_data(conf, "test") != NULL && conf_module_data(conf, "nope") == NULL,
          "module_data");
    CHECK(tdata(conf)->port == 8080 && strcmp(tdata(conf)->name, "anon") == 0, "defaults");

    CHECK(conf_set(conf, "port", "5", "reload", err, sizeof(err)) == 0, "set: %s", err);
    CHECK(tdata(conf)->port == 5, "port %lld", tdata(conf)->port);
    CHECK(conf_set(conf, "port", "0", "api", err, sizeof(err)) == -1, "0 accepted");
    CHECK(strstr(err, "port (from api)") != NULL, "source label: %s", err);
    CHECK(tdata(conf)->port == 5, "failed set changed the value to %lld", tdata(conf)->port);
    CHECK(conf_set(conf, "verbose", "maybe", "api", err, sizeof(err)) == -1, "bool");
    CHECK(conf_set(conf, "level", "loud", "api", err, sizeof(err)) == -1, "validator");
    CHECK(strcmp(tdata(conf)->level, "info") == 0, "failed validation changed the value");

    /* conf_validate alone: set an inconsistent pair through conf_set, then validate. */
    CHECK(conf_set(conf, "min_len", "50", "api", err, sizeof(err)) == 0, "min_len");
    CHECK(conf_validate(conf, err, sizeof(err)) == -1, "cross-key not checked");
    CHECK(strstr(err, "min_len") != NULL, "validate message: %s", err);

    /* An overlong key is an unknown key, not a crash or a truncated match. */
    char longkey[300];
    memset(longkey, 'p', sizeof(longkey));
    memcpy(longkey, "port", 4);
    longkey[sizeof(longkey) - 1] = '\0';
    CHECK(conf_set(conf, longkey, "1", "api", err, sizeof(err)) == -1, "overlong key accepted");

    /* Error text is bounded by errlen. */
    char tiny[8];
    memset(tiny, 'X', sizeof(tiny));
    CHECK(conf_set(conf, "port", "0", "flag", tiny, 4) == -1, "tiny err");
    CHECK(tiny[3] == '\0' && tiny[4] == 'X', "err overflowed");
    conf_free(conf);
}

struct changes {
    char names[8][32]; /* changed keys, in table order */
    bool reload[8];    /* their CONF_RELOAD flag */
    int n;
};

static void
note_change(const char *key, bool reloadable, void *arg)
{
    struct changes *c = arg;
    if (c->n < 8) {
        snprintf(c->names[c->n], sizeof(c->names[c->n]), "%s", key);
        c->reload[c->n++] = reloadable;
    }
}

static void
test_reload(void)
{
    struct conf *live = conf_new(modules, ARRAY_SIZE(modules));
    struct conf *fresh = conf_new(modules, ARRAY_SIZE(modules));
    char err[256];
    struct changes c = {0};
    CHECK(conf_changed(live, fresh, note_change, &c) == 0 && c.n == 0, "equal confs differ");
    CHECK(conf_set(fresh, "workers", "9", "file", err, sizeof(err)) == 0, "workers");
    CHECK(conf_set(fresh, "port", "99", "file", err, sizeof(err)) == 0, "port");
    CHECK(conf_set(fresh, "level", "debug", "file", err, sizeof(err)) == 0, "level");
    CHECK(conf_set(fresh, "debug", "no", "file", err, sizeof(err)) == 0, "debug unchanged");
    CHECK(conf_changed(live, fresh, note_change, &c) == 3, "changed keys: %d", c.n);
    const struct tmod *t = tdata(live);
    CHECK(t->workers != 9 && t->port == 8080, "conf_changed changed the live conf");
    bool saw_workers = false, saw_port = false;
    for (int i = 0; i < c.n; i++) {
        if (strcmp(c.names[i], "workers") == 0) {
            saw_workers = c.reload[i];
        }
        if (strcmp(c.names[i], "port") == 0) {
            saw_port = !c.reload[i];
        }
    }
    CHECK(saw_workers && saw_port, "reload flags not reported");
    conf_free(fresh);
    conf_free(live);
}

static void
test_core_table(void)
{
    const struct conf_module *const core[] = {&core_conf_module, &tmodule};
    struct conf *conf = conf_new(core, ARRAY_SIZE(core));
    const struct core_conf *c = conf_module_data(conf, "core");
    CHECK(c && c->max_frame_bytes == 1048576 && strcmp(c->log_level, "info") == 0, "core defaults");
    char err[256];
    char *argv[] = {"--log-level=debug", "--max_frame_bytes=63"};
    CHECK(conf_load(conf, NULL, NULL, 1, argv, err, sizeof(err)) == 0, "log level: %s", err);
    CHECK(strcmp(c->log_level, "debug") == 0, "log_level %s", c->log_level);
    CHECK(conf_load(conf, NULL, NULL, 1, argv + 1, err, sizeof(err)) == -1, "frame 63 accepted");
    CHECK(strstr(err, "max_frame_bytes (from flag)") != NULL, "message: %s", err);
    conf_free(conf);
    conf_free(NULL);
}

static void
test_validators(void)
{
    CHECK(conf_check_hostport("127.0.0.1:80") == NULL, "hostport ok");
    CHECK(conf_check_hostport("[::1]:80") == NULL, "hostport v6");
    CHECK(conf_check_hostport("nohost") != NULL, "hostport bad");
    CHECK(conf_check_hostport("") != NULL, "hostport empty");
    CHECK(conf_check_url_redis("") == NULL, "redis unset");
    CHECK(conf_check_url_redis("redis://h:1/0") == NULL, "redis ok");
    CHECK(conf_check_url_redis("unix:///run/redis.sock") == NULL, "redis unix");
    CHECK(conf_check_url_redis("http://h") != NULL, "redis bad");
    CHECK(conf_check_url_postgres("postgresql://u@h/db") == NULL, "pg ok");
    CHECK(conf_check_url_postgres("postgres://u@h/db") == NULL, "pg short");
    CHECK(conf_check_url_postgres("mysql://u@h/db") != NULL, "pg bad");
    CHECK(conf_check_url_amqp("amqp://u:p@h/") == NULL, "amqp ok");
    CHECK(conf_check_url_amqp("amqps-ish") != NULL, "amqp bad");
    CHECK(conf_check_url_mongo("mongodb://h/db") == NULL, "mongo ok");
    CHECK(conf_check_url_mongo("mongo://h") != NULL, "mongo bad");
}

static const struct test_case cases[] = {
    {"cases_file", test_cases_file},   {"secret_values", test_secret_values},
    {"dump_format", test_dump_format}, {"direct_api", test_direct_api},
    {"reload", test_reload},           {"core_table", test_core_table},
    {"validators", test_validators},
};

HARNESS_MAIN("conf", cases)
