/*
 * libFuzzer target for body_check_raw (roles/gateway/body.h). The first byte picks max_depth; the
 * rest is the body. Verdicts are checked against util_utf8_valid, and, for bodies cJSON accepts
 * as the gateway parses them, against cJSON's depth and an independent \u0000 scan.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "body.h"
#include "json.h"

#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_body.c:%d: %s\n", __LINE__, #cond);                              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * A \u0000 escape in a string of valid JSON. Formulated unlike body.c on purpose: a quote or a
 * backslash is syntax when an even number of backslashes runs right before it.
 */
static int
ref_nul_escape(const char *s, size_t len)
{
    int in_string = 0;
    size_t run = 0; /* backslashes immediately before s[i], inside a string */
    for (size_t i = 0; i < len; i++) {
        int syntax = run % 2 == 0;
        if (!in_string) {
            in_string = s[i] == '"';
            run = 0;
            continue;
        }
        if (s[i] == '\\' && syntax && i + 5 < len && memcmp(s + i + 1, "u0000", 5) == 0) {
            return 1;
        }
        if (s[i] == '"' && syntax) {
            in_string = 0;
        }
        run = s[i] == '\\' ? run + 1 : 0;
    }
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    int max = data[0] % 24;
    const char *s = (const char *)data + 1;
    size_t len = size - 1;
    int r = body_check_raw(s, len, max);
    FUZZ_ASSERT(r == BODY_OK || r == BODY_BAD_UTF8 || r == BODY_NUL || r == BODY_TOO_DEEP);
    FUZZ_ASSERT(body_check_message(r) != NULL);

    bool has_nul = memchr(s, '\0', len) != NULL, utf8 = util_utf8_valid(s, len);
    if (r == BODY_OK) {
        FUZZ_ASSERT(!has_nul && utf8);
        /* A larger limit never refuses what a smaller one accepted. */
        FUZZ_ASSERT(body_check_raw(s, len, max + 1) == BODY_OK);
        FUZZ_ASSERT(body_check_raw(s, len, 1000000) == BODY_OK);
    }
    if (r == BODY_BAD_UTF8) {
        FUZZ_ASSERT(!utf8);
    }
    if (has_nul || !utf8) {
        FUZZ_ASSERT(r == BODY_NUL || r == BODY_BAD_UTF8);
        return 0;
    }

    /* As api.c parses a body that passed: NUL-terminated, nothing after the value. */
    char *copy = malloc(len + 1);
    memcpy(copy, s, len);
    copy[len] = '\0';
    cJSON *j = cJSON_ParseWithOpts(copy, NULL, 1);
    if (j != NULL) {
        int nul = ref_nul_escape(copy, len), deep = json_depth(j) > max;
        if (nul && deep) {
            FUZZ_ASSERT(r == BODY_NUL || r == BODY_TOO_DEEP);
        } else if (nul) {
            FUZZ_ASSERT(r == BODY_NUL);
        } else if (deep) {
            FUZZ_ASSERT(r == BODY_TOO_DEEP);
        } else {
            FUZZ_ASSERT(r == BODY_OK);
        }
        cJSON_Delete(j);
    }
    free(copy);
    return 0;
}
