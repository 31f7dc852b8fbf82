/*
 * Validation helpers over cJSON trees, shared by every role that reads untrusted JSON: typed field
 * access with bounds, unknown-field and duplicate-key checks. Errors are written into err as one
 * sentence naming the field, suitable for a client-facing message.
 */
#ifndef CHANCED_JSON_H
#define CHANCED_JSON_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "util.h"

/* The largest integer a JSON number carries exactly (2^53 - 1); our bounds stay below it. */
#define JSON_MAX_SAFE_INT 9007199254740991LL

/* Fails if obj is not an object, or has a key outside allowed (NULL-terminated list). */
int json_check_fields(const cJSON *obj, const char *const *allowed, char *err,
                      size_t errlen) MUSTCHECK;
/* True if any object in the tree repeats a key. */
bool json_has_duplicate_keys(const cJSON *node);
/* Nesting depth of the tree (a scalar is 0, {} is 1). */
int json_depth(const cJSON *node);

/*
 * Typed getters. A missing field with required=false leaves *out untouched and returns 0.
 * Strings: must be valid UTF-8, 1..maxlen bytes.
 * Integers: must be a JSON number with no fraction within [min, max].
 */
int json_get_string(const cJSON *obj, const char *key, bool required, size_t maxlen,
                    const char **out, char *err, size_t errlen) MUSTCHECK;
int json_get_int(const cJSON *obj, const char *key, bool required, long long min, long long max,
                 long long *out, char *err, size_t errlen) MUSTCHECK;
int json_get_bool(const cJSON *obj, const char *key, bool required, bool *out, char *err,
                  size_t errlen) MUSTCHECK;
/* True if item is a number with an integral value in the safe range. */
bool json_is_int(const cJSON *item);
/*
 * The items of an array as a new vector of pointers (free with free()), for loops that index
 * it: cJSON_GetArrayItem walks the list from the start, so indexing in a loop is quadratic.
 * *n is the number of items; NULL and 0 when arr is not an array or is empty.
 */
const cJSON **json_items(const cJSON *arr, int *n);

#endif
