/*
 * Configuration engine. Each module (the core and each role) declares one key table; a row gives
 * the key's name, type, default, where it lives in the module's struct, bounds or a validator, and
 * flags. Sources apply in order default < file (--config) < env CHANCED_<KEY> < flag --key=value,
 * all through the same setter, so validation does not depend on where a value came from.
 *
 * Ownership: struct conf owns every module struct and every string in them. Roles read them
 * through `const` pointers from conf_module_data(); they stay valid until conf_free().
 */
#ifndef CHANCED_CONF_H
#define CHANCED_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "util.h"

enum conf_type {
    CONF_STR,  /* char *, owned by the conf; "" when unset */
    CONF_INT,  /* long long within [min, max] */
    CONF_BOOL, /* bool: true/false/yes/no/on/off/1/0 */
};

#define CONF_SECRET 0x1 /* redacted in dumps; KEY_file reads the value from a file */
#define CONF_RELOAD 0x2 /* applied again on SIGHUP */

/* Returns NULL if value is acceptable, else a short phrase saying why not. */
typedef const char *(*conf_check_fn)(const char *value);

struct conf_key {
    const char *name;    /* snake_case; also --name= and CHANCED_NAME */
    enum conf_type type; /* how the value is parsed and stored */
    const char *def;     /* default, as text */
    size_t offset;       /* offsetof the field in the module's struct */
    long long min, max;  /* bounds, CONF_INT only */
    conf_check_fn check; /* optional extra validation, or NULL */
    unsigned flags;      /* CONF_SECRET | CONF_RELOAD */
    const char *help;    /* one line for --help, dumps and the README table */
};

/* Cross-key validation after all sources; returns NULL or a phrase naming the keys. */
typedef const char *(*conf_validate_fn)(const void *data);

struct conf_module {
    const char *name;            /* "core", "gateway", ... */
    const struct conf_key *keys; /* the key table */
    size_t nkeys;                /* rows in keys */
    size_t size;                 /* sizeof the module's struct */
    conf_validate_fn validate;   /* optional, or NULL */
};

struct conf;

/* Creates a configuration over the given modules (borrowed; static tables). Defaults applied. */
struct conf *conf_new(const struct conf_module *const *modules, size_t nmodules);
void conf_free(struct conf *conf);

/*
 * Applies file (path may be NULL), systemd credentials ($CREDENTIALS_DIRECTORY/<secret key>),
 * environment (envp, NULL-terminated), then the key flags in argv (each "--key=value"). On error fills err with a message naming
 * the key and source and returns -1; the caller exits 78.
 */
int conf_load(struct conf *conf, const char *path, char **envp, int argc, char **argv, char *err,
              size_t errlen) MUSTCHECK;
/* Sets one key from a given source label ("flag", "env", ...). -1 with err filled on failure. */
int conf_set(struct conf *conf, const char *key, const char *value, const char *source, char *err,
             size_t errlen) MUSTCHECK;
/* Runs every module's cross-key validation; -1 with err filled on failure. */
int conf_validate(struct conf *conf, char *err, size_t errlen) MUSTCHECK;

/* CHANCED_* environment variables that named no key (NULL-terminated; borrowed). */
const char *const *conf_unknown_env(const struct conf *conf);
/* The value of a CONF_STR key (first module that has it), or NULL. Borrowed. */
const char *conf_get_str(const struct conf *conf, const char *key);
/* True if some module has this key (after -/_ and case normalisation). */
bool conf_has_key(const struct conf *conf, const char *key);
/* Returns the module's struct (owned by conf), or NULL if no such module. */
const void *conf_module_data(const struct conf *conf, const char *module);
/* Called by conf_changed for each key whose value differs (reloadable: it has CONF_RELOAD). */
typedef void (*conf_change_fn)(const char *key, bool reloadable, void *arg);
/* Compares two configurations over the same modules; calls fn (may be NULL) for each key whose
 * value differs and returns how many differ. Neither conf is changed. */
size_t conf_changed(const struct conf *a, const struct conf *b, conf_change_fn fn, void *arg);

/* Prints "key = value  # source" lines, secrets redacted. */
void conf_dump(const struct conf *conf, FILE *out);
/* Prints the key table as a Markdown table (key, default, modules, description). */
void conf_dump_markdown(const struct conf *conf, FILE *out);

/* Validators for common shapes. */
const char *conf_check_hostport(const char *value);
/* A comma-separated list of host:port (the gateway's peers: each a name or an address). */
const char *conf_check_hostport_list(const char *value);
const char *conf_check_url_redis(const char *value);
const char *conf_check_url_postgres(const char *value);
const char *conf_check_url_amqp(const char *value);
const char *conf_check_url_mongo(const char *value);
/* RabbitMQ queue names: 1..200 of letters, digits, '.', '_', '-' (chance and logger agree). */
const char *conf_check_queue_name(const char *value);

#endif
