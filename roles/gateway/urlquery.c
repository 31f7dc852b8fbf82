/* Strict URL query-string parsing (urlquery.h). */
#include "urlquery.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes s[0..n) into out (n+1 bytes); -1 on a bad escape or an encoded NUL. */
static int
url_decode(const char *s, size_t n, char *out, size_t *outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n) {
                return -1;
            }
            int hi = hexval(s[i + 1]);
            int lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                return -1;
            }
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    out[o] = '\0';
    *outlen = o;
    return 0;
}

static bool
name_allowed(const char *name, const char *const *allowed)
{
    for (; *allowed; allowed++) {
        if (strcmp(*allowed, name) == 0) {
            return true;
        }
    }
    return false;
}

int
urlquery_parse(const char *raw, const char *const *allowed, struct urlquery *q, char *err,
               size_t errlen)
{
    memset(q, 0, sizeof(*q));
    size_t total = strlen(raw);
    q->buf = xmalloc(total * 2 + 2);
    char *w = q->buf;
    const char *p = raw;
    while (*p) {
        size_t n = strcspn(p, "&");
        if (n > 0) {
            const char *eq = memchr(p, '=', n);
            size_t nl = eq ? (size_t)(eq - p) : n, vl = eq ? n - nl - 1 : 0, dl;
            if (q->n == URLQUERY_MAX) {
                snprintf(err, errlen, "too many query parameters");
                return -1;
            }
            char *name = w;
            if (url_decode(p, nl, name, &dl) != 0 || !util_utf8_valid(name, dl)) {
                snprintf(err, errlen, "malformed query parameter name");
                return -1;
            }
            w += dl + 1;
            char *value = w;
            if (url_decode(eq ? eq + 1 : "", vl, value, &dl) != 0 || !util_utf8_valid(value, dl)) {
                snprintf(err, errlen, "query parameter '%.*s' is malformed",
                         util_utf8_prefix(name, 64), name);
                return -1;
            }
            w += dl + 1;
            if (!name_allowed(name, allowed)) {
                snprintf(err, errlen, "unknown query parameter '%.*s'", util_utf8_prefix(name, 64),
                         name);
                return -1;
            }
            if (urlquery_get(q, name)) {
                snprintf(err, errlen, "query parameter '%.*s' is repeated",
                         util_utf8_prefix(name, 64), name);
                return -1;
            }
            q->names[q->n] = name;
            q->values[q->n] = value;
            q->n++;
        }
        p += n;
        if (*p == '&') {
            p++;
        }
    }
    return 0;
}

const char *
urlquery_get(const struct urlquery *q, const char *name)
{
    for (int i = 0; i < q->n; i++) {
        if (strcmp(q->names[i], name) == 0) {
            return q->values[i];
        }
    }
    return NULL;
}

void
urlquery_cleanup(struct urlquery *q)
{
    free(q->buf);
    memset(q, 0, sizeof(*q));
}
