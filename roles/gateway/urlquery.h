/*
 * URL query strings (the part after '?'), parsed strictly: at most URLQUERY_MAX pairs, names
 * and values percent-decoded ('+' is a space), every name from an allow-list and given once,
 * valid UTF-8 and no NUL after decoding. Pure functions; no I/O; fuzzed (test/fuzz).
 */
#ifndef CHANCED_GATEWAY_URLQUERY_H
#define CHANCED_GATEWAY_URLQUERY_H

#include <stddef.h>

#include "util.h"

#define URLQUERY_MAX 32
struct urlquery {
    int n;                      /* pairs parsed */
    char *names[URLQUERY_MAX];  /* decoded names (into buf) */
    char *values[URLQUERY_MAX]; /* decoded values (into buf) */
    char *buf;                  /* owned storage */
};
/*
 * Parses raw into q; refuses (-1, err filled) more than URLQUERY_MAX pairs, a repeated name,
 * a name outside allowed (NULL-terminated), invalid UTF-8 or a NUL after decoding.
 */
int urlquery_parse(const char *raw, const char *const *allowed, struct urlquery *q, char *err,
                   size_t errlen) MUSTCHECK;
/* The value of name, or NULL. */
const char *urlquery_get(const struct urlquery *q, const char *name);
void urlquery_cleanup(struct urlquery *q);

#endif
