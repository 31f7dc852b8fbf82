/* redis_url parsing (redisurl.h). */
#include "redisurl.h"

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

/* A new percent-decoded copy of s[0..n), or NULL on a bad escape or an encoded NUL. */
static char *
decode(const char *s, size_t n)
{
    char *out = xmalloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                util_wipe(out, o);
                free(out);
                return NULL;
            }
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

/* Parses a non-negative decimal of at most 9 digits; -1 if s[0..n) is not one. */
static long
small_number(const char *s, size_t n)
{
    if (n == 0 || n > 9 || strspn(s, "0123456789") < n) {
        return -1;
    }
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* One "host[:port]" or "[v6]:port" of the host list. */
static int
parse_host(const char *s, size_t n, struct redisurl_host *h, char *err, size_t errlen)
{
    const char *host = s, *port = NULL;
    size_t hlen = n;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (close == NULL) {
            snprintf(err, errlen, "redis_url: unclosed '[' in a host");
            return -1;
        }
        host = s + 1;
        hlen = (size_t)(close - s - 1);
        if ((size_t)(close - s) + 1 < n) {
            if (close[1] != ':') {
                snprintf(err, errlen, "redis_url: expected ':' after ']'");
                return -1;
            }
            port = close + 2;
        }
    } else {
        const char *colon = memchr(s, ':', n);
        if (colon) {
            hlen = (size_t)(colon - s);
            port = colon + 1;
        }
    }
    if (hlen == 0 || hlen > REDISURL_HOST_MAX || memchr(host, '@', hlen) ||
        memchr(host, '/', hlen)) {
        snprintf(err, errlen, "redis_url: bad host");
        return -1;
    }
    memcpy(h->host, host, hlen);
    h->host[hlen] = '\0';
    h->port = 6379;
    if (port) {
        long p = small_number(port, (size_t)(s + n - port));
        if (p < 1 || p > 65535) {
            snprintf(err, errlen, "redis_url: bad port");
            return -1;
        }
        h->port = (int)p;
    }
    return 0;
}

static int
parse_userinfo(struct redisurl *u, const char *s, size_t n, char *err, size_t errlen)
{
    const char *colon = memchr(s, ':', n);
    size_t ulen = colon ? (size_t)(colon - s) : n;
    if (colon == NULL) {
        /* "redis://secret@host": the single part is the password, as redis-cli reads it. */
        if ((u->password = decode(s, n)) == NULL) {
            goto bad;
        }
        return 0;
    }
    if (ulen > 0 && (u->user = decode(s, ulen)) == NULL) {
        goto bad;
    }
    if ((u->password = decode(colon + 1, n - ulen - 1)) == NULL) {
        goto bad;
    }
    return 0;
bad:
    snprintf(err, errlen, "redis_url: bad percent-encoding in the user or password");
    return -1;
}

static int
parse_unix(struct redisurl *u, const char *p, char *err, size_t errlen)
{
    const char *q = strchr(p, '?');
    size_t n = q ? (size_t)(q - p) : strlen(p);
    if (n == 0 || p[0] != '/') {
        snprintf(err, errlen, "redis_url: unix:// needs an absolute socket path");
        return -1;
    }
    u->path = xstrndup(p, n);
    if (q) {
        long db = strncmp(q, "?db=", 4) == 0 ? small_number(q + 4, strlen(q + 4)) : -1;
        if (db < 0 || db > 10000) {
            snprintf(err, errlen, "redis_url: unix:// accepts only ?db=N");
            return -1;
        }
        u->db = (int)db;
    }
    return 0;
}

int
redisurl_parse(const char *url, struct redisurl *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof(*u));
    const char *p;
    if (strncmp(url, "unix://", 7) == 0) {
        if (parse_unix(u, url + 7, err, errlen) != 0) {
            goto fail;
        }
        return 0;
    }
    if (strncmp(url, "redis://", 8) == 0) {
        p = url + 8;
    } else if (strncmp(url, "rediss://", 9) == 0) {
        p = url + 9;
        u->tls = true;
    } else {
        snprintf(err, errlen, "redis_url: expected redis://, rediss:// or unix://");
        goto fail;
    }
    /* The authority ends at the first '/' or '?'; its last '@' ends the user info (a raw '@'
     * in a password thus still works, though encoding it is cleaner). */
    size_t alen = strcspn(p, "/?");
    const char *at = NULL;
    for (size_t i = 0; i < alen; i++) {
        if (p[i] == '@') {
            at = p + i;
        }
    }
    if (at) {
        if (parse_userinfo(u, p, (size_t)(at - p), err, errlen) != 0) {
            goto fail;
        }
        alen -= (size_t)(at - p) + 1;
        p = at + 1;
    }
    const char *end = p + alen;
    for (;;) {
        size_t left = alen - (size_t)(p - (end - alen));
        const char *comma = memchr(p, ',', left);
        size_t n = comma ? (size_t)(comma - p) : left;
        if (u->nhosts == REDISURL_MAX_HOSTS) {
            snprintf(err, errlen, "redis_url: more than %d hosts", REDISURL_MAX_HOSTS);
            goto fail;
        }
        if (parse_host(p, n, &u->hosts[u->nhosts++], err, errlen) != 0) {
            goto fail;
        }
        if (comma == NULL) {
            break;
        }
        p = comma + 1;
    }
    if (*end == '/') {
        const char *db = end + 1;
        size_t n = strcspn(db, "?");
        long v = n ? small_number(db, n) : 0;
        if (v < 0 || v > 10000) {
            snprintf(err, errlen, "redis_url: the database must be a number");
            goto fail;
        }
        u->db = (int)v;
        end = db + n;
    }
    if (*end != '\0') {
        snprintf(err, errlen,
                 "redis_url: unexpected query string (TLS files are the keys "
                 "redis_tls_ca, redis_tls_cert, redis_tls_key)");
        goto fail;
    }
    return 0;
fail:
    redisurl_cleanup(u);
    return -1;
}

void
redisurl_cleanup(struct redisurl *u)
{
    if (u->password) {
        util_wipe(u->password, strlen(u->password));
    }
    free(u->password);
    free(u->user);
    free(u->path);
    memset(u, 0, sizeof(*u));
}
