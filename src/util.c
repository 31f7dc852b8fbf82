/* Allocation, time, randomness and string helpers used across the daemon. */
#include "util.h"

#include <netdb.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static void oom(size_t size) __attribute__((noreturn));

static void
oom(size_t size)
{
    fprintf(stderr, "chanced: out of memory allocating %zu bytes\n", size);
    abort();
}

void *
xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL) {
        oom(size);
    }
    return p;
}

void *
xcalloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (p == NULL) {
        oom(nmemb * size);
    }
    return p;
}

void *
xrealloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (p == NULL) {
        oom(size);
    }
    return p;
}

char *
xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *
xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        abort();
    }
    char *p = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

int64_t
time_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
time_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
time_format_iso(int64_t ms, char *buf, size_t size)
{
    int64_t secs = ms / 1000, rem = ms % 1000;
    if (rem < 0) { /* floor division: -1 ms is 23:59:59.999 of the day before */
        rem += 1000;
        secs--;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)rem);
}

int
time_parse_iso(const char *s, int64_t *ms)
{
    int y, mo, d, h, mi, sec, n = 0, frac = 0;
    /* Fixed shape first: sscanf alone would take signs and spaces inside the fields. */
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    for (size_t i = 0; i < sizeof(shape) - 1; i++) {
        bool digit = s[i] >= '0' && s[i] <= '9';
        if (shape[i] == 'd' ? !digit : s[i] != shape[i]) {
            return -1;
        }
    }
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19) {
        return -1;
    }
    const char *p = s + n;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++) {
            if (digits < 3) {
                frac = frac * 10 + (*p - '0');
            }
        }
        if (digits == 0) {
            return -1;
        }
        for (; digits < 3; digits++) {
            frac *= 10;
        }
    }
    if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0) {
        return -1;
    }
    if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
        sec > 59) {
        return -1;
    }
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = sec};
    time_t t = timegm(&tm);
    if (t == (time_t)-1) {
        return -1;
    }
    /* timegm normalises 31 February into March: refuse such dates. */
    struct tm back;
    gmtime_r(&t, &back);
    if (back.tm_mday != d || back.tm_mon != mo - 1) {
        return -1;
    }
    *ms = (int64_t)t * 1000 + frac;
    return 0;
}

void
util_random_bytes(void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            fprintf(stderr, "chanced: getrandom failed: %s\n", strerror(errno));
            abort();
        }
        p += n;
        len -= (size_t)n;
    }
}

uint64_t
util_random_below(uint64_t bound)
{
    /* Reject the top sliver of the 64-bit space so every residue is equally likely. */
    uint64_t limit = UINT64_MAX - (UINT64_MAX % bound);
    uint64_t r;
    do {
        util_random_bytes(&r, sizeof(r));
    } while (r >= limit);
    return r % bound;
}

void
util_random_hex(char *out, size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[64];
    if (nbytes > sizeof(raw)) {
        nbytes = sizeof(raw);
    }
    util_random_bytes(raw, nbytes);
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[2 * nbytes] = '\0';
}

int
util_resolve_all(const char *host, int port, struct sockaddr_storage *out, socklen_t *lens, int max)
{
    struct addrinfo hints = {0}, *res = NULL;
    char portstr[16];
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(portstr, sizeof(portstr), "%d", port);
    if (getaddrinfo(host, portstr, &hints, &res) != 0 || res == NULL) {
        return 0;
    }
    int n = 0;
    for (struct addrinfo *a = res; a && n < max; a = a->ai_next) {
        if (a->ai_addrlen > sizeof(*out)) {
            continue;
        }
        bool dup = false; /* a name listed once per socket type or family order: keep one */
        for (int i = 0; i < n && !dup; i++) {
            dup = lens[i] == a->ai_addrlen && memcmp(&out[i], a->ai_addr, a->ai_addrlen) == 0;
        }
        if (!dup) {
            memcpy(&out[n], a->ai_addr, a->ai_addrlen);
            lens[n++] = (socklen_t)a->ai_addrlen;
        }
    }
    freeaddrinfo(res);
    return n;
}

int
util_resolve(const char *host, int port, struct sockaddr_storage *out, socklen_t *len)
{
    return util_resolve_all(host, port, out, len, 1) == 1 ? 0 : -1;
}

int
util_parse_hostport(const char *s, char **host, int *port)
{
    const char *colon;
    const char *h = s;
    size_t hlen;
    if (*s == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL || end[1] != ':') {
            return -1;
        }
        h = s + 1;
        hlen = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL) {
            return -1;
        }
        hlen = (size_t)(colon - s);
    }
    char *endp;
    errno = 0;
    long p = strtol(colon + 1, &endp, 10);
    if (errno != 0 || *endp != '\0' || endp == colon + 1 || p < 0 || p > 65535 || hlen == 0) {
        return -1;
    }
    *host = xstrndup(h, hlen);
    *port = (int)p;
    return 0;
}

int
util_utf8_prefix(const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    if (s[n] != '\0') {
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80) {
            n--; /* s[n] continues a character: cut before that character */
        }
    }
    return (int)n;
}

bool
util_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        unsigned c = *p;
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            p++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, cp = c & 0x07;
        } else {
            return false;
        }
        if ((size_t)(end - p) <= n) {
            return false;
        }
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return false;
        }
        p += n + 1;
    }
    return true;
}

void
util_wipe(void *buf, size_t len)
{
    volatile unsigned char *p = buf;
    while (len--) {
        *p++ = 0;
    }
}

void
sbuf_append(struct sbuf *b, const void *data, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + len + 1) {
            cap *= 2;
        }
        b->data = xrealloc(b->data, cap);
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void
sbuf_appends(struct sbuf *b, const char *s)
{
    sbuf_append(b, s, strlen(s));
}

void
sbuf_appendf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if (b->len + (size_t)n + 1 > b->cap) {
        sbuf_append(b, "", 0);
        size_t cap = b->cap;
        while (cap < b->len + (size_t)n + 1) {
            cap *= 2;
        }
        b->data = xrealloc(b->data, cap);
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *
sbuf_steal(struct sbuf *b)
{
    char *p = b->data ? b->data : xstrdup("");
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

void
sbuf_cleanup(struct sbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
