/* Typed, bounded access to untrusted JSON trees. */
#include "json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int
json_check_fields(const cJSON *obj, const char *const *allowed, char *err, size_t errlen)
{
    if (!cJSON_IsObject(obj)) {
        snprintf(err, errlen, "expected a JSON object");
        return -1;
    }
    for (const cJSON *it = obj->child; it; it = it->next) {
        const char *const *a = allowed;
        while (*a && strcmp(*a, it->string) != 0) {
            a++;
        }
        if (*a == NULL) {
            snprintf(err, errlen, "unknown field '%.*s'", util_utf8_prefix(it->string, 64),
                     it->string);
            return -1;
        }
    }
    return 0;
}

static int
cmp_keys(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorting makes this O(n log n): a 1 MiB object of 100k keys must not stall a loop. */
static bool
object_repeats_key(const cJSON *obj)
{
    size_t n = 0;
    for (const cJSON *c = obj->child; c; c = c->next) {
        n++;
    }
    if (n < 2) {
        return false;
    }
    const char **keys = xmalloc(n * sizeof(*keys));
    size_t i = 0;
    for (const cJSON *c = obj->child; c; c = c->next) {
        keys[i++] = c->string;
    }
    qsort(keys, n, sizeof(*keys), cmp_keys);
    bool dup = false;
    for (i = 1; i < n && !dup; i++) {
        dup = strcmp(keys[i - 1], keys[i]) == 0;
    }
    free(keys);
    return dup;
}

bool
json_has_duplicate_keys(const cJSON *node)
{
    if (node == NULL) {
        return false;
    }
    if (cJSON_IsObject(node) && object_repeats_key(node)) {
        return true;
    }
    for (const cJSON *c = node->child; c; c = c->next) {
        if (json_has_duplicate_keys(c)) {
            return true;
        }
    }
    return false;
}

int
json_depth(const cJSON *node)
{
    if (node == NULL || !(cJSON_IsObject(node) || cJSON_IsArray(node))) {
        return 0;
    }
    int max = 0;
    for (const cJSON *c = node->child; c; c = c->next) {
        int d = json_depth(c);
        if (d > max) {
            max = d;
        }
    }
    return max + 1;
}

bool
json_is_int(const cJSON *item)
{
    if (!cJSON_IsNumber(item)) {
        return false;
    }
    double d = item->valuedouble;
    return isfinite(d) && floor(d) == d && fabs(d) <= (double)JSON_MAX_SAFE_INT;
}

int
json_get_string(const cJSON *obj, const char *key, bool required, size_t maxlen, const char **out,
                char *err, size_t errlen)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (it == NULL || cJSON_IsNull(it)) {
        if (required) {
            snprintf(err, errlen, "field '%s' is required", key);
            return -1;
        }
        return 0;
    }
    if (!cJSON_IsString(it)) {
        snprintf(err, errlen, "field '%s' must be a string", key);
        return -1;
    }
    size_t n = strlen(it->valuestring);
    if (n == 0 || n > maxlen) {
        snprintf(err, errlen, "field '%s' must be 1 to %zu bytes long", key, maxlen);
        return -1;
    }
    if (!util_utf8_valid(it->valuestring, n)) {
        snprintf(err, errlen, "field '%s' is not valid UTF-8", key);
        return -1;
    }
    *out = it->valuestring;
    return 0;
}

int
json_get_int(const cJSON *obj, const char *key, bool required, long long min, long long max,
             long long *out, char *err, size_t errlen)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (it == NULL || cJSON_IsNull(it)) {
        if (required) {
            snprintf(err, errlen, "field '%s' is required", key);
            return -1;
        }
        return 0;
    }
    if (!json_is_int(it) || it->valuedouble < (double)min || it->valuedouble > (double)max) {
        snprintf(err, errlen, "field '%s' must be an integer from %lld to %lld", key, min, max);
        return -1;
    }
    *out = (long long)it->valuedouble;
    return 0;
}

int
json_get_bool(const cJSON *obj, const char *key, bool required, bool *out, char *err, size_t errlen)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (it == NULL || cJSON_IsNull(it)) {
        if (required) {
            snprintf(err, errlen, "field '%s' is required", key);
            return -1;
        }
        return 0;
    }
    if (!cJSON_IsBool(it)) {
        snprintf(err, errlen, "field '%s' must be true or false", key);
        return -1;
    }
    *out = cJSON_IsTrue(it);
    return 0;
}

const cJSON **
json_items(const cJSON *arr, int *n)
{
    *n = cJSON_IsArray(arr) ? cJSON_GetArraySize(arr) : 0;
    if (*n == 0) {
        return NULL;
    }
    const cJSON **v = xcalloc((size_t)*n, sizeof(*v));
    int i = 0;
    for (const cJSON *c = arr->child; c && i < *n; c = c->next) {
        v[i++] = c;
    }
    return v;
}
