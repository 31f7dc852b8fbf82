/*
 * libFuzzer target for urlquery_parse (roles/gateway/urlquery.h): the input, up to its first NUL,
 * is the query string. The verdict and every decoded pair are compared with a reference decoder;
 * accepted names are allowed and distinct, decoded text is UTF-8 without NUL, err is bounded.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "urlquery.h"

#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_urlquery.c:%d: %s\n", __LINE__, #cond);                          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Names with a space, '&', '=', '%' and non-ASCII in them, and enough to reach URLQUERY_MAX. */
static const char *allowed[8 + 40 + 1] = {"a",         "b",        "limit", "cursor",
                                          "user name", "\xc3\xa9", "a&b=c", "x%y"};
static char numbered[40][16];

static bool
is_allowed(const char *name)
{
    for (const char *const *a = allowed; *a; a++) {
        if (strcmp(*a, name) == 0) {
            return true;
        }
    }
    return false;
}

/* Decodes s[0..n) into out (n+1 bytes); the decoded length, or -1 on a bad or %00 escape. */
static long
ref_decode(const char *s, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[o++] = s[i] == '+' ? ' ' : s[i];
            continue;
        }
        if (n - i < 3 || s[i + 1] == '\0' || s[i + 2] == '\0') {
            return -1;
        }
        const char *hi = strchr(hex, s[i + 1]), *lo = strchr(hex, s[i + 2]);
        if (hi == NULL || lo == NULL) {
            return -1;
        }
        out[o++] = (char)(((hi - hex) % 16) * 16 + (lo - hex) % 16);
        i += 2;
    }
    out[o] = '\0';
    return memchr(out, '\0', o) ? -1 : (long)o;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (allowed[8] == NULL) {
        for (int i = 0; i < 40; i++) {
            snprintf(numbered[i], sizeof(numbered[i]), "p%d", i);
            allowed[8 + i] = numbered[i];
        }
    }
    char *raw = malloc(size + 1);
    memcpy(raw, data, size);
    raw[size] = '\0';
    size_t len = strlen(raw);

    /* The reference: pieces between '&', the first '=' splitting each non-empty one. */
    char *scratch = malloc(2 * len + 2);
    const char *ref_names[64], *ref_values[64];
    char *w = scratch;
    int n = 0, ok = 1;
    for (size_t start = 0; start <= len && ok;) {
        size_t end = start;
        while (end < len && raw[end] != '&') {
            end++;
        }
        if (end > start) {
            const char *eq = memchr(raw + start, '=', end - start);
            size_t nl = eq ? (size_t)(eq - (raw + start)) : end - start;
            long dn = ref_decode(raw + start, nl, w);
            ok = n < URLQUERY_MAX && dn >= 0 && util_utf8_valid(w, (size_t)dn) && is_allowed(w);
            for (int k = 0; ok && k < n; k++) {
                ok = strcmp(ref_names[k], w) != 0;
            }
            ref_names[n] = w;
            w += dn + 1;
            long dv = eq ? ref_decode(eq + 1, end - nl - 1 - start, w) : (*w = '\0', 0);
            ok = ok && dv >= 0 && util_utf8_valid(w, (size_t)dv);
            ref_values[n++] = w;
            w += dv + 1;
        }
        start = end + 1;
    }

    struct urlquery q;
    char err[160]; /* as api.c's */
    int rc = urlquery_parse(raw, (const char *const *)allowed, &q, err, sizeof(err));
    FUZZ_ASSERT(rc == 0 || rc == -1);
    FUZZ_ASSERT(rc == (ok ? 0 : -1));
    if (rc == 0) {
        FUZZ_ASSERT(q.n == n && q.n <= URLQUERY_MAX);
        for (int i = 0; i < q.n; i++) {
            FUZZ_ASSERT(is_allowed(q.names[i]));
            FUZZ_ASSERT(strcmp(q.names[i], ref_names[i]) == 0);
            FUZZ_ASSERT(strcmp(q.values[i], ref_values[i]) == 0);
            FUZZ_ASSERT(util_utf8_valid(q.values[i], strlen(q.values[i])));
            FUZZ_ASSERT(urlquery_get(&q, q.names[i]) == q.values[i]);
            for (int k = 0; k < i; k++) {
                FUZZ_ASSERT(strcmp(q.names[i], q.names[k]) != 0);
            }
        }
    } else {
        /* A sentence that reaches clients in a JSON problem document: it must be UTF-8. */
        FUZZ_ASSERT(strlen(err) > 0 && util_utf8_valid(err, strlen(err)));
        /* A small err is filled, terminated, and not overrun. */
        char small[48];
        size_t smallen = 1 + (size ? data[0] % 40 : 0);
        memset(small, '#', sizeof(small));
        urlquery_cleanup(&q);
        FUZZ_ASSERT(urlquery_parse(raw, (const char *const *)allowed, &q, small, smallen) == -1);
        FUZZ_ASSERT(memchr(small, '\0', smallen) != NULL && small[smallen] == '#');
    }
    urlquery_cleanup(&q);
    free(scratch);
    free(raw);
    return 0;
}
