/* Code and reward generation from a CSPRNG pool with rejection sampling. */
#include "codegen.h"

#include <ctype.h>
#include <math.h>
#include <string.h>

static unsigned char
next_byte(struct codegen_rng *rng)
{
    if (!rng->filled || rng->pos == sizeof(rng->buf)) {
        util_random_bytes(rng->buf, sizeof(rng->buf));
        rng->pos = 0;
        rng->filled = true;
    }
    return rng->buf[rng->pos++];
}

size_t
codegen_make(struct codegen_rng *rng, const char *prefix, int length, char *out)
{
    static const char alphabet[] = CODEGEN_ALPHABET;
    /* 248 = 8 * 31: bytes at or above it are rejected so every letter is equally likely. */
    const unsigned limit = 256 - 256 % CODEGEN_RADIX;
    size_t n = 0;
    if (prefix && *prefix) {
        n = strlen(prefix);
        memcpy(out, prefix, n);
        out[n++] = '-';
    }
    for (int i = 0; i < length; i++) {
        unsigned b;
        do {
            b = next_byte(rng);
        } while (b >= limit);
        out[n++] = alphabet[b % CODEGEN_RADIX];
    }
    out[n] = '\0';
    return n;
}

uint64_t
codegen_below(struct codegen_rng *rng, uint64_t bound)
{
    uint64_t limit = UINT64_MAX - (UINT64_MAX % bound), r;
    do {
        r = 0;
        for (int i = 0; i < 8; i++) {
            r = (r << 8) | next_byte(rng);
        }
    } while (r >= limit);
    return r % bound;
}

long long
codegen_reward(struct codegen_rng *rng, long long min, long long max, long long step)
{
    uint64_t steps = (uint64_t)((max - min) / step) + 1;
    return min + (long long)codegen_below(rng, steps) * step;
}

int
codegen_normalise(const char *in, char *out, size_t outsize)
{
    while (*in == ' ' || *in == '\t') {
        in++;
    }
    size_t n = 0;
    for (; *in && *in != ' ' && *in != '\t'; in++) {
        unsigned char c = (unsigned char)toupper((unsigned char)*in);
        bool ok = (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
        if (!ok || n + 1 >= outsize) {
            return -1;
        }
        out[n++] = (char)c;
    }
    while (*in == ' ' || *in == '\t') {
        in++;
    }
    if (*in != '\0' || n == 0) {
        return -1;
    }
    out[n] = '\0';
    return 0;
}

int
codegen_prefix(const char *in, char *out)
{
    size_t n = strlen(in);
    if (n == 0 || n > CODEGEN_MAX_PREFIX) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)toupper((unsigned char)in[i]);
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) {
            return -1;
        }
        out[i] = (char)c;
    }
    out[n] = '\0';
    return 0;
}

bool
codegen_sparse_enough(double count, int length)
{
    return count * 1e6 <= pow(CODEGEN_RADIX, length);
}
