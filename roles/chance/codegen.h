/*
 * Chance codes: random strings over an alphabet without look-alike characters (no 0/O, 1/I/L),
 * drawn from the kernel CSPRNG with rejection sampling, optionally after a per-category prefix.
 * Pure functions apart from the randomness; unit-tested.
 */
#ifndef CHANCED_CHANCE_CODEGEN_H
#define CHANCED_CHANCE_CODEGEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define CODEGEN_ALPHABET "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
#define CODEGEN_RADIX 31
#define CODEGEN_MAX_PREFIX 8
#define CODEGEN_MAX_CODE 48 /* prefix + '-' + 32 characters + NUL, rounded up */

/* A buffer of CSPRNG bytes so that a code costs no system call. Embedded; init with {0}. */
struct codegen_rng {
    unsigned char buf[4096]; /* random bytes */
    size_t pos;              /* next unused byte; refill when it reaches the end */
    bool filled;             /* buf holds bytes */
};

/* Writes prefix ("" for none) + '-' + length random characters into out; returns its length. */
size_t codegen_make(struct codegen_rng *rng, const char *prefix, int length, char *out);
/* A uniform integer in [0, bound) from the pool. bound > 0. */
uint64_t codegen_below(struct codegen_rng *rng, uint64_t bound);
/* A reward drawn uniformly from {min, min+step, ..., <= max}. */
long long codegen_reward(struct codegen_rng *rng, long long min, long long max, long long step);

/*
 * Canonical form of a user-typed code: trims spaces, uppercases. Returns -1 if a character is
 * outside the alphabet, the prefix letters or '-', or the result is too long.
 */
int codegen_normalise(const char *in, char *out, size_t outsize) MUSTCHECK;
/* Checks a prefix: 1..8 of [A-Za-z0-9]; writes it uppercased. -1 if invalid. */
int codegen_prefix(const char *in, char *out) MUSTCHECK;
/*
 * True if `count` codes of `length` random characters stay sparse: at most one millionth of the
 * code space, so guessing a valid code is hopeless and collisions are rare.
 */
bool codegen_sparse_enough(double count, int length);

#endif
