/* Small helpers shared by every module: allocation that aborts on OOM, time, randomness, strings. */
#ifndef CHANCED_UTIL_H
#define CHANCED_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define MUSTCHECK __attribute__((warn_unused_result))
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define UNUSED(x) ((void)(x))

/* Allocation: these abort with a message on out-of-memory, so callers never check. */
void *xmalloc(size_t size);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Returns a new string formatted like printf; free with free(). */
char *xasprintf(const char *fmt, ...) PRINTF_LIKE(1, 2);

/* Milliseconds on the monotonic clock (for deadlines) and since the epoch (for records). */
int64_t time_mono_ms(void);
int64_t time_wall_ms(void);
/* Formats epoch milliseconds as RFC 3339 UTC with milliseconds into buf (>= 32 bytes). */
void time_format_iso(int64_t ms, char *buf, size_t size);
/* Parses RFC 3339 UTC ("2026-01-02T03:04:05Z", optional ".mmm") into epoch ms; -1 on error. */
int time_parse_iso(const char *s, int64_t *ms) MUSTCHECK;

/* Fills buf with len bytes from the kernel CSPRNG (getrandom); aborts if it cannot. */
void util_random_bytes(void *buf, size_t len);
/* A uniformly random integer in [0, bound) from the CSPRNG, by rejection sampling. bound > 0. */
uint64_t util_random_below(uint64_t bound);
/* Writes a random lowercase hex id of 2*nbytes characters plus NUL into out. */
void util_random_hex(char *out, size_t nbytes);

/*
 * Resolves host (a name or an IP literal) for a TCP connect to port into out/len: the first
 * address. Blocks on DNS for names (service names resolve locally). 0, or -1 if it cannot.
 */
int util_resolve(const char *host, int port, struct sockaddr_storage *out,
                 socklen_t *len) MUSTCHECK;
/*
 * All addresses of host (a name may resolve to several: each counts as one peer), at most max,
 * into out/lens; returns how many (0 if none).
 */
int util_resolve_all(const char *host, int port, struct sockaddr_storage *out, socklen_t *lens,
                     int max);

/* Splits "host:port" (IPv6 as "[::1]:port") into host (caller frees) and port; -1 on error. */
int util_parse_hostport(const char *s, char **host, int *port) MUSTCHECK;
/* The length of s cut to at most max bytes without splitting a UTF-8 character (for quoting
 * untrusted text in messages: "%.*s" with this length stays valid UTF-8). */
int util_utf8_prefix(const char *s, size_t max);
/* True if s is valid UTF-8 of length len. */
bool util_utf8_valid(const char *s, size_t len);
/* Overwrites len bytes of buf with zeros in a way the compiler may not drop. */
void util_wipe(void *buf, size_t len);

/* A growable byte buffer. Embedded by callers; init with {0}. */
struct sbuf {
    char *data; /* NUL-terminated contents, NULL while empty */
    size_t len; /* bytes used, excluding the NUL */
    size_t cap; /* bytes allocated */
};
void sbuf_append(struct sbuf *b, const void *data, size_t len);
void sbuf_appends(struct sbuf *b, const char *s);
void sbuf_appendf(struct sbuf *b, const char *fmt, ...) PRINTF_LIKE(2, 3);
/* Returns the contents and resets b; the caller frees the result. Never NULL. */
char *sbuf_steal(struct sbuf *b);
void sbuf_cleanup(struct sbuf *b);

#endif
