/*
 * Password hashing (libargon2, argon2id, PHC strings) with the number of hashes in flight
 * bounded by a semaphore, and a dummy hash so unknown users cost the same as wrong passwords.
 * Callable from any thread; blocks for the duration of a hash (tens of milliseconds).
 */
#ifndef CHANCED_GATEWAY_PASSWD_H
#define CHANCED_GATEWAY_PASSWD_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

struct passwd_hasher;

struct passwd_params {
    unsigned memory_kib;  /* m */
    unsigned iterations;  /* t */
    unsigned parallelism; /* p */
    int max_inflight;     /* concurrent hashes */
    int queue_ms;         /* wait for a slot before giving up */
    int queue_max;        /* callers waiting at once; more give up at once */
};

#define PASSWD_ENCODED_MAX 160 /* room for any PHC string we produce */

enum passwd_result {
    PASSWD_OK = 0,       /* hashed, or verified: match */
    PASSWD_MISMATCH = 1, /* verified: wrong password */
    PASSWD_BUSY = -1,    /* no hashing slot within queue_ms, or queue full */
    PASSWD_FAILED = -2,  /* libargon2 refused (logged) */
};

/* Creates the hasher and computes its dummy hash; NULL if the parameters are refused (logged). */
struct passwd_hasher *passwd_new(const struct passwd_params *params);
void passwd_free(struct passwd_hasher *pw);
/* Hashes a password with a fresh salt into out (PASSWD_ENCODED_MAX bytes). */
enum passwd_result passwd_hash(struct passwd_hasher *pw, const char *password, size_t len,
                               char *out) MUSTCHECK;
/* Verifies password against encoded; encoded NULL verifies against the dummy (always mismatch). */
enum passwd_result passwd_verify(struct passwd_hasher *pw, const char *encoded,
                                 const char *password, size_t len) MUSTCHECK;
/* True if encoded was made with other parameters than the current ones (rehash on login). */
bool passwd_needs_rehash(const struct passwd_hasher *pw, const char *encoded);
/* Hashes running right now (for metrics). */
int passwd_inflight(struct passwd_hasher *pw);

#endif
