/*
 * libFuzzer target for the JSON validators (json.h) over any tree cJSON parses. The first input
 * byte picks the bounds; the rest is the JSON text. Results are checked against independent
 * reference implementations and the getters' contracts.
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_json.c:%d: %s\n", __LINE__, #cond);                              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define SENTINEL 0x5e5e5e5e5e5eLL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Duplicate keys by sorting each object's keys: the n log n reference. */
static int
ref_duplicates(const cJSON *node)
{
    size_t n = 0;
    for (const cJSON *c = node->child; c; c = c->next) {
        n++;
        if (ref_duplicates(c)) {
            return 1;
        }
    }
    if (!cJSON_IsObject(node) || n < 2) {
        return 0;
    }
    const char **keys = malloc(n * sizeof(*keys));
    n = 0;
    for (const cJSON *c = node->child; c; c = c->next) {
        keys[n++] = c->string;
    }
    qsort(keys, n, sizeof(*keys), cmp_str);
    int dup = 0;
    for (size_t i = 1; i < n && !dup; i++) {
        dup = strcmp(keys[i - 1], keys[i]) == 0;
    }
    free(keys);
    return dup;
}

static int
ref_depth(const cJSON *node)
{
    if (!cJSON_IsObject(node) && !cJSON_IsArray(node)) {
        return 0;
    }
    int max = 0;
    for (const cJSON *c = node->child; c; c = c->next) {
        int d = ref_depth(c);
        max = d > max ? d : max;
    }
    return max + 1;
}

static void
check_getters(const cJSON *obj, const char *key, unsigned sel)
{
    static const long long bounds[][2] = {
        {0, 10}, {-JSON_MAX_SAFE_INT, JSON_MAX_SAFE_INT}, {LLONG_MIN, LLONG_MAX}, {5, 5}};
    static const size_t maxlens[] = {1, 8, 64, SIZE_MAX};
    const long long *b = bounds[sel % 4];
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    bool present = item != NULL && !cJSON_IsNull(item);
    char err[48];

    long long n = SENTINEL;
    int rc = json_get_int(obj, key, (sel & 16) != 0, b[0], b[1], &n, err, sizeof(err));
    if (rc == 0 && present) {
        FUZZ_ASSERT(json_is_int(item) && n >= b[0] && n <= b[1] && (double)n == item->valuedouble);
    } else {
        FUZZ_ASSERT(n == SENTINEL);
        FUZZ_ASSERT(rc == 0 || memchr(err, '\0', sizeof(err)) != NULL);
    }

    const char *s = "sentinel";
    size_t maxlen = maxlens[(sel >> 2) % 4];
    rc = json_get_string(obj, key, (sel & 16) != 0, maxlen, &s, err, sizeof(err));
    if (rc == 0 && present) {
        FUZZ_ASSERT(cJSON_IsString(item) && s == item->valuestring);
        FUZZ_ASSERT(strlen(s) >= 1 && strlen(s) <= maxlen && util_utf8_valid(s, strlen(s)));
    } else {
        FUZZ_ASSERT(strcmp(s, "sentinel") == 0);
    }

    bool v = (sel & 32) != 0;
    rc = json_get_bool(obj, key, (sel & 16) != 0, &v, err, sizeof(err));
    FUZZ_ASSERT(rc != 0 || !present || (cJSON_IsBool(item) && v == cJSON_IsTrue(item)));
    FUZZ_ASSERT((rc == 0 && present) || v == ((sel & 32) != 0));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    unsigned sel = data[0];
    cJSON *j = cJSON_ParseWithLength((const char *)data + 1, size - 1);
    if (j == NULL) {
        return 0;
    }
    FUZZ_ASSERT(json_has_duplicate_keys(j) == (ref_duplicates(j) != 0));
    FUZZ_ASSERT(json_depth(j) == ref_depth(j));

    static const char *const allowed[] = {"a", "b", "n", "s", "", NULL};
    char err[32];
    int rc = json_check_fields(j, allowed, err, sizeof(err));
    int ok = cJSON_IsObject(j);
    for (const cJSON *c = ok ? j->child : NULL; c; c = c->next) {
        int known = 0;
        for (const char *const *a = allowed; *a; a++) {
            known |= strcmp(*a, c->string) == 0;
        }
        ok &= known;
    }
    FUZZ_ASSERT(rc == (ok ? 0 : -1));
    FUZZ_ASSERT(rc == 0 || memchr(err, '\0', sizeof(err)) != NULL);

    check_getters(j, "n", sel);
    check_getters(j, "s", sel);
    for (const cJSON *c = cJSON_IsObject(j) ? j->child : NULL; c; c = c->next) {
        check_getters(j, c->string, sel);
    }
    cJSON_Delete(j);
    return 0;
}
