/* libargon2 adapter: argon2id hashing and verification behind a counting semaphore. */
#include "passwd.h"

#include <argon2.h>
#include <errno.h>
#include <malloc.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define PASSWD_SALT_BYTES 16
#define PASSWD_HASH_BYTES 32

struct passwd_hasher {
    struct passwd_params params;    /* copied at creation */
    sem_t slots;                    /* free hashing slots */
    int inflight;                   /* hashes running (atomic) */
    int waiting;                    /* callers waiting for a slot (atomic) */
    char dummy[PASSWD_ENCODED_MAX]; /* hash of a random secret, for unknown users */
};

/*
 * A free slot at once, else a short wait in a short queue: a login flood must be answered 503
 * within about queue_ms, not park most of the HTTP workers behind two hashes. Past queue_max
 * waiters the caller gives up without waiting at all.
 */
static int
acquire(struct passwd_hasher *pw)
{
    if (sem_trywait(&pw->slots) == 0) {
        __atomic_add_fetch(&pw->inflight, 1, __ATOMIC_RELAXED);
        return 0;
    }
    if (__atomic_add_fetch(&pw->waiting, 1, __ATOMIC_RELAXED) > pw->params.queue_max) {
        __atomic_sub_fetch(&pw->waiting, 1, __ATOMIC_RELAXED);
        return -1;
    }
    int rc = 0;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += pw->params.queue_ms / 1000;
    deadline.tv_nsec += (long)(pw->params.queue_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    while (sem_timedwait(&pw->slots, &deadline) != 0) {
        if (errno != EINTR) {
            rc = -1;
            break;
        }
    }
    __atomic_sub_fetch(&pw->waiting, 1, __ATOMIC_RELAXED);
    if (rc == 0) {
        __atomic_add_fetch(&pw->inflight, 1, __ATOMIC_RELAXED);
    }
    return rc;
}

static void
release(struct passwd_hasher *pw)
{
    __atomic_sub_fetch(&pw->inflight, 1, __ATOMIC_RELAXED);
    sem_post(&pw->slots);
}

static int
hash_unlocked(const struct passwd_hasher *pw, const char *password, size_t len, char *out)
{
    unsigned char salt[PASSWD_SALT_BYTES];
    util_random_bytes(salt, sizeof(salt));
    int rc = argon2id_hash_encoded(pw->params.iterations, pw->params.memory_kib,
                                   pw->params.parallelism, password, len, salt, sizeof(salt),
                                   PASSWD_HASH_BYTES, out, PASSWD_ENCODED_MAX);
    if (rc != ARGON2_OK) {
        log_error("argon2_failed", "reason=\"%s\"", argon2_error_message(rc));
        return PASSWD_FAILED;
    }
    return PASSWD_OK;
}

struct passwd_hasher *
passwd_new(const struct passwd_params *params)
{
    struct passwd_hasher *pw = xcalloc(1, sizeof(*pw));
    pw->params = *params;
    if (argon2_encodedlen(params->iterations, params->memory_kib, params->parallelism,
                          PASSWD_SALT_BYTES, PASSWD_HASH_BYTES, Argon2_id) >= PASSWD_ENCODED_MAX) {
        log_error("argon2_params_refused", "reason=\"encoded hash too long\"");
        free(pw);
        return NULL;
    }
    /* argon2 mallocs m KiB per hash. glibc would serve repeats from the calling thread's arena
     * and keep the memory (its mmap threshold grows after the first big free), so every HTTP
     * worker that ever hashed would pin ~20 MB. A fixed threshold makes these allocations
     * mmap/munmap: memory goes back to the system when the hash is done. Process-wide, and
     * harmless for the small allocations everything else makes. */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    sem_init(&pw->slots, 0, (unsigned)params->max_inflight);
    char secret[32];
    util_random_hex(secret, 15);
    int rc = hash_unlocked(pw, secret, strlen(secret), pw->dummy);
    util_wipe(secret, sizeof(secret));
    if (rc != PASSWD_OK) {
        sem_destroy(&pw->slots);
        free(pw);
        return NULL;
    }
    return pw;
}

void
passwd_free(struct passwd_hasher *pw)
{
    if (pw) {
        sem_destroy(&pw->slots);
        free(pw);
    }
}

enum passwd_result
passwd_hash(struct passwd_hasher *pw, const char *password, size_t len, char *out)
{
    if (acquire(pw) != 0) {
        return PASSWD_BUSY;
    }
    int rc = hash_unlocked(pw, password, len, out);
    release(pw);
    return rc;
}

enum passwd_result
passwd_verify(struct passwd_hasher *pw, const char *encoded, const char *password, size_t len)
{
    bool dummy = encoded == NULL;
    if (acquire(pw) != 0) {
        return PASSWD_BUSY;
    }
    int rc = argon2id_verify(dummy ? pw->dummy : encoded, password, len);
    release(pw);
    if (rc == ARGON2_OK) {
        return dummy ? PASSWD_MISMATCH : PASSWD_OK;
    }
    if (rc != ARGON2_VERIFY_MISMATCH) {
        /* A malformed stored hash is an operator problem; the client still sees a mismatch. */
        log_warn("argon2_verify_failed", "reason=\"%s\"", argon2_error_message(rc));
    }
    return PASSWD_MISMATCH;
}

bool
passwd_needs_rehash(const struct passwd_hasher *pw, const char *encoded)
{
    unsigned v, m, t, p;
    if (sscanf(encoded, "$argon2id$v=%u$m=%u,t=%u,p=%u$", &v, &m, &t, &p) != 4) {
        return true;
    }
    return v != ARGON2_VERSION_NUMBER || m != pw->params.memory_kib || t != pw->params.iterations ||
           p != pw->params.parallelism;
}

int
passwd_inflight(struct passwd_hasher *pw)
{
    return __atomic_load_n(&pw->inflight, __ATOMIC_RELAXED);
}
