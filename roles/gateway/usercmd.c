/*
 * chanced admin create-user --username U [--admin] [--password-file F] [--if-missing]
 * The password comes from a file or stdin, never from argv (argv is visible in ps).
 */
#include "usercmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "audit.h"
#include "gw.h"
#include "log.h"
#include "migrate.h"
#include "passwd.h"
#include "pg.h"

#define EX_USAGE 64
#define EX_UNAVAILABLE 69

struct create_opts {
    const char *username;      /* --username */
    const char *password_file; /* --password-file, or NULL for stdin */
    bool admin;                /* --admin */
    bool if_missing;           /* --if-missing: an existing user is success */
};

static const struct pg_stmt insert_user = {
    "cmd_insert_user",
    "WITH u AS (INSERT INTO users (username, password_hash, role) VALUES ($1, $2, $3)"
    " RETURNING id), w AS (INSERT INTO wallets (user_id) SELECT id FROM u) SELECT id FROM u"};

/* Takes "--name=value" or "--name value"; returns the value or NULL. */
static const char *
option_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0) {
        return NULL;
    }
    if (argv[*i][n] == '=') {
        return argv[*i] + n + 1;
    }
    if (argv[*i][n] == '\0' && *i + 1 < argc) {
        return argv[++*i];
    }
    return NULL;
}

static int
parse(int argc, char **argv, struct create_opts *o)
{
    for (int i = 2; i < argc; i++) {
        const char *v;
        if ((v = option_value(argc, argv, &i, "--username")) != NULL) {
            o->username = v;
        } else if ((v = option_value(argc, argv, &i, "--password-file")) != NULL) {
            o->password_file = v;
        } else if (strcmp(argv[i], "--admin") == 0) {
            o->admin = true;
        } else if (strcmp(argv[i], "--if-missing") == 0) {
            o->if_missing = true;
        } else {
            fprintf(stderr, "chanced: unknown option %s\n", argv[i]);
            return -1;
        }
    }
    return o->username ? 0 : -1;
}

/* Reads the first line of the file (or stdin) into buf; -1 if unreadable or empty. */
static int
read_password(const char *path, char *buf, size_t size)
{
    FILE *f = path ? fopen(path, "r") : stdin;
    if (f == NULL) {
        fprintf(stderr, "chanced: cannot open %s\n", path);
        return -1;
    }
    char *line = fgets(buf, (int)size, f);
    if (path) {
        fclose(f);
    }
    if (line == NULL) {
        return -1;
    }
    buf[strcspn(buf, "\r\n")] = '\0';
    return buf[0] ? 0 : -1;
}

struct new_user {
    const struct create_opts *o;
    const char *hash;
    char id[24]; /* the new user's id */
};

static int
apply_create(struct pg_conn *c, void *arg, char **event, struct pg_error *err)
{
    struct new_user *u = arg;
    const char *role = u->o->admin ? "admin" : "user";
    const char *params[] = {u->o->username, u->hash, role};
    struct pg_result *res = NULL;
    if (pg_exec(c, &insert_user, 3, params, &res, err) != 0) {
        return -1;
    }
    snprintf(u->id, sizeof(u->id), "%s", pg_text(res, 0, 0));
    pg_result_free(res);
    char msg[160];
    snprintf(msg, sizeof(msg), "%s %s was created from the command line", role, u->o->username);
    struct audit_actor actor = {"0", "system", "system"};
    cJSON *subject = cJSON_CreateObject();
    cJSON_AddStringToObject(subject, "user_id", u->id);
    cJSON_AddStringToObject(subject, "username", u->o->username);
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "action", "user.create");
    cJSON_AddStringToObject(data, "role", role);
    *event = audit_event("admin.action", &actor, subject, data, msg);
    return 1;
}

/*
 * With --if-missing, an existing user is success only if it is what was asked for: a name
 * taken by a plain user must not pass for an admin that exists.
 */
static int
existing_user(struct pg_conn *c, const struct create_opts *o)
{
    static const struct pg_stmt role_of = {
        "cmd_role_of", "SELECT role FROM users WHERE lower(username) = lower($1)"};
    const char *params[] = {o->username};
    struct pg_result *res = NULL;
    struct pg_error err;
    int rc = 1;
    if (pg_exec(c, &role_of, 1, params, &res, &err) != 0 || pg_rows(res) != 1) {
        fprintf(stderr, "chanced: user %s already exists\n", o->username);
    } else if (o->admin && strcmp(pg_text(res, 0, 0), "admin") != 0) {
        fprintf(stderr,
                "chanced: user %s exists but is not an admin; refusing to treat it as the admin "
                "(choose another --username, or promote it deliberately)\n",
                o->username);
    } else {
        printf("%s %s already exists; nothing changed\n", pg_text(res, 0, 0), o->username);
        rc = o->if_missing ? 0 : 1;
        if (!o->if_missing) {
            fprintf(stderr, "chanced: user %s already exists\n", o->username);
        }
    }
    pg_result_free(res);
    return rc;
}

static int
insert(const struct gateway_conf *conf, const struct create_opts *o, const char *hash)
{
    struct pg_pool *pool = gw_pool_new(conf, 1);
    struct pg_error err = {0};
    int rc = EX_UNAVAILABLE;
    int m = migrate_apply(pool);
    struct pg_conn *c = m == 0 ? pg_acquire(pool, 10000, &err) : NULL;
    if (c == NULL) {
        rc = m == -2 ? 1 : EX_UNAVAILABLE;
        goto out;
    }
    struct new_user u = {o, hash, ""};
    if (audit_commit(c, NULL, apply_create, &u, &err) > 0) {
        printf("created %s %s (id %s)\n", o->admin ? "admin" : "user", o->username, u.id);
        rc = 0;
    } else if (err.cls == PG_ERR_UNIQUE) {
        rc = existing_user(c, o);
    } else {
        fprintf(stderr, "chanced: cannot create the user: %s\n", err.message);
        rc = err.cls == PG_ERR_CONNECTION ? EX_UNAVAILABLE : 1;
    }
out:
    pg_release(pool, c);
    pg_pool_free(pool);
    return rc;
}

int
usercmd_run(const struct gateway_conf *conf, int argc, char **argv)
{
    struct create_opts o = {0};
    if (argc < 2 || strcmp(argv[1], "create-user") != 0 || parse(argc, argv, &o) != 0) {
        fprintf(stderr, "usage: chanced admin create-user --username U [--admin] "
                        "[--password-file F] [--if-missing]   (password on stdin otherwise)\n");
        return EX_USAGE;
    }
    if (!api_username_ok(o.username)) {
        fprintf(stderr, "chanced: username must be 3 to 32 of A-Z a-z 0-9 . _ -\n");
        return EX_USAGE;
    }
    char password[512], hash[PASSWD_ENCODED_MAX];
    int rc = 1;
    if (read_password(o.password_file, password, sizeof(password)) != 0 || strlen(password) < 8 ||
        strlen(password) > 256) {
        fprintf(stderr, "chanced: the password must be one line of 8 to 256 bytes\n");
        rc = EX_USAGE;
        goto out;
    }
    struct passwd_hasher *pw = gw_passwd_new(conf);
    if (pw == NULL || passwd_hash(pw, password, strlen(password), hash) != PASSWD_OK) {
        passwd_free(pw);
        goto out;
    }
    passwd_free(pw);
    rc = insert(conf, &o, hash);
out:
    util_wipe(password, sizeof(password));
    util_wipe(hash, sizeof(hash));
    return rc;
}
