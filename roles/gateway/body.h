/*
 * Checks on raw JSON text before it reaches cJSON, for what cJSON would accept silently or
 * handle badly: invalid UTF-8, NUL bytes and \u0000 escapes (cJSON truncates strings at NUL),
 * and nesting deep enough to cost stack. Pure functions: no I/O, no allocation.
 */
#ifndef CHANCED_GATEWAY_BODY_H
#define CHANCED_GATEWAY_BODY_H

#include <stddef.h>

enum body_check {
    BODY_OK,       /* fine to parse */
    BODY_BAD_UTF8, /* not valid UTF-8 */
    BODY_NUL,      /* a NUL byte or a \u0000 escape */
    BODY_TOO_DEEP, /* objects/arrays nested deeper than allowed */
};

/* Scans len bytes of s; returns an enum body_check. */
int body_check_raw(const char *s, size_t len, int max_depth);
/* A client-facing sentence for a result of body_check_raw. */
const char *body_check_message(int result);

#endif
