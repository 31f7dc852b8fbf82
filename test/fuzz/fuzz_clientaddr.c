/*
 * libFuzzer target for the client address parser (roles/gateway/clientaddr.h). The input, split
 * at '\n', is a list of X-Forwarded-For lines. Whatever is accepted must be an address inet_pton
 * reads back to the same text, the right-most entry of the last line, and bucket to a key that
 * fits; nothing may overrun a small output buffer.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clientaddr.h"

#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_clientaddr.c:%d: %s\n", __LINE__, #cond);                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* True if text is an address in canonical form: it parses, and formats back to itself. */
static int
canonical(const char *text)
{
    unsigned char bin[sizeof(struct in6_addr)];
    char again[INET6_ADDRSTRLEN];
    if (inet_pton(AF_INET, text, bin) == 1) {
        return inet_ntop(AF_INET, bin, again, sizeof(again)) && strcmp(again, text) == 0;
    }
    if (inet_pton(AF_INET6, text, bin) == 1) {
        return inet_ntop(AF_INET6, bin, again, sizeof(again)) && strcmp(again, text) == 0 &&
               !IN6_IS_ADDR_V4MAPPED((struct in6_addr *)bin);
    }
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    const char *lines[64];
    size_t n = 0;
    for (char *save = NULL, *p = strtok_r(text, "\n", &save); p && n < 64;
         p = strtok_r(NULL, "\n", &save)) {
        lines[n++] = p;
    }
    char out[CLIENTADDR_MAX], key[CLIENTADDR_MAX];
    if (clientaddr_forwarded(lines, n, out, sizeof(out)) == 0) {
        FUZZ_ASSERT(canonical(out));
        /* It came from the last line, after its last comma. */
        const char *comma = strrchr(lines[n - 1], ',');
        const char *last = comma ? comma + 1 : lines[n - 1];
        char again[CLIENTADDR_MAX];
        FUZZ_ASSERT(clientaddr_parse(last, strlen(last), again, sizeof(again)) == 0);
        FUZZ_ASSERT(strcmp(again, out) == 0);
        FUZZ_ASSERT(clientaddr_bucket(out, key, sizeof(key)) == 0);
        FUZZ_ASSERT(strlen(key) < sizeof(key));
        /* A bucket holds its address: IPv4 is itself, IPv6 ends in "/64". */
        FUZZ_ASSERT(strcmp(key, out) == 0 || strstr(key, "/64") == key + strlen(key) - 3);
    }
    /* Each whole line on its own, into a buffer of any small size. */
    for (size_t i = 0; i < n; i++) {
        char small[CLIENTADDR_MAX + 1];
        size_t cap = 1 + (size ? data[0] % CLIENTADDR_MAX : 0);
        memset(small, '#', sizeof(small));
        if (clientaddr_parse(lines[i], strlen(lines[i]), small, cap) == 0) {
            FUZZ_ASSERT(strlen(small) < cap && canonical(small));
        }
        FUZZ_ASSERT(small[cap] == '#');
    }
    free(text);
    return 0;
}
