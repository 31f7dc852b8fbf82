/* Client address parsing and bucketing (see clientaddr.h). */
#include "clientaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Writes a binary address as canonical text, unmapping ::ffff:a.b.c.d to a.b.c.d. */
static int
format(int family, const void *bin, char *out, size_t size)
{
    char text[INET6_ADDRSTRLEN];
    const struct in6_addr *a6 = bin;
    if (family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(a6)) {
        family = AF_INET;
        bin = &a6->s6_addr[12];
    }
    if (inet_ntop(family, bin, text, sizeof(text)) == NULL) {
        return -1;
    }
    size_t n = strlen(text);
    if (n >= size) {
        return -1;
    }
    memcpy(out, text, n + 1);
    return 0;
}

int
clientaddr_from_sockaddr(const struct sockaddr *sa, char *out, size_t size)
{
    if (sa->sa_family == AF_INET) {
        return format(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, size);
    }
    if (sa->sa_family == AF_INET6) {
        return format(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, size);
    }
    return -1;
}

static bool
blank(char c)
{
    return c == ' ' || c == '\t';
}

int
clientaddr_parse(const char *s, size_t n, char *out, size_t size)
{
    while (n > 0 && blank(*s)) {
        s++;
        n--;
    }
    while (n > 0 && blank(s[n - 1])) {
        n--;
    }
    bool bracketed = n >= 2 && s[0] == '[' && s[n - 1] == ']';
    if (bracketed) {
        s++;
        n -= 2;
    }
    char text[INET6_ADDRSTRLEN];
    if (n == 0 || n >= sizeof(text) || memchr(s, '\0', n)) {
        return -1;
    }
    memcpy(text, s, n);
    text[n] = '\0';
    unsigned char bin[sizeof(struct in6_addr)];
    if (!bracketed && inet_pton(AF_INET, text, bin) == 1) {
        return format(AF_INET, bin, out, size);
    }
    /* inet_pton takes no zone ("fe80::1%eth0"): a zone means nothing to another host anyway. */
    if (inet_pton(AF_INET6, text, bin) == 1) {
        return format(AF_INET6, bin, out, size);
    }
    return -1;
}

int
clientaddr_forwarded(const char *const *lines, size_t nlines, char *out, size_t size)
{
    /* Lines are one list split across headers (RFC 9110 5.3): the right-most entry is the last
     * line's last. An empty one there means the proxy added nothing we can use. */
    if (nlines == 0) {
        return -1;
    }
    const char *line = lines[nlines - 1];
    const char *comma = strrchr(line, ',');
    const char *start = comma ? comma + 1 : line;
    return clientaddr_parse(start, strlen(start), out, size);
}

int
clientaddr_bucket(const char *addr, char *out, size_t size)
{
    unsigned char bin[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, addr, bin) == 1) {
        return format(AF_INET, bin, out, size);
    }
    if (inet_pton(AF_INET6, addr, bin) != 1) {
        return -1;
    }
    struct in6_addr a6;
    memcpy(&a6, bin, sizeof(a6));
    if (IN6_IS_ADDR_V4MAPPED(&a6)) {
        return format(AF_INET6, bin, out, size); /* canonical text is the IPv4 address */
    }
    memset(&a6.s6_addr[8], 0, 8);
    char text[INET6_ADDRSTRLEN];
    if (inet_ntop(AF_INET6, &a6, text, sizeof(text)) == NULL) {
        return -1;
    }
    int w = snprintf(out, size, "%s/64", text);
    return w > 0 && (size_t)w < size ? 0 : -1;
}
