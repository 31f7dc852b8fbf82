/* Token buckets in a chained hash table under one mutex; the hash is seeded per process. */
#include "ratelimit.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

#define RL_BUCKETS 16384 /* hash chains; a power of two */

struct rl_entry {
    char *key;             /* owned */
    double tokens;         /* available now (as of last_ms) */
    int64_t last_ms;       /* monotonic time of the last refill */
    struct rl_entry *next; /* chain */
};

struct ratelimit {
    double rate;                         /* tokens per millisecond */
    double burst;                        /* bucket capacity */
    size_t max_keys;                     /* entries before a sweep */
    size_t nkeys;                        /* entries now */
    uint64_t seed;                       /* keeps chains unpredictable to clients */
    pthread_mutex_t lock;                /* guards everything below */
    struct rl_entry *chains[RL_BUCKETS]; /* the table */
};

struct ratelimit *
ratelimit_new(double rate, double burst, size_t max_keys)
{
    struct ratelimit *rl = xcalloc(1, sizeof(*rl));
    rl->rate = rate / 1000.0;
    rl->burst = burst < 1 ? 1 : burst;
    rl->max_keys = max_keys;
    util_random_bytes(&rl->seed, sizeof(rl->seed));
    pthread_mutex_init(&rl->lock, NULL);
    return rl;
}

static void
free_chain(struct rl_entry *e)
{
    while (e) {
        struct rl_entry *next = e->next;
        free(e->key);
        free(e);
        e = next;
    }
}

void
ratelimit_free(struct ratelimit *rl)
{
    if (rl == NULL) {
        return;
    }
    for (size_t i = 0; i < RL_BUCKETS; i++) {
        free_chain(rl->chains[i]);
    }
    pthread_mutex_destroy(&rl->lock);
    free(rl);
}

static uint64_t
hash_key(const struct ratelimit *rl, const char *key)
{
    uint64_t h = 14695981039346656037ULL ^ rl->seed;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h = (h ^ *p) * 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static void
refill(const struct ratelimit *rl, struct rl_entry *e, int64_t now)
{
    e->tokens = fmin(rl->burst, e->tokens + (double)(now - e->last_ms) * rl->rate);
    e->last_ms = now;
}

/* Drops buckets that are full again (their key has been quiet); clears all if that is not enough. */
static void
sweep(struct ratelimit *rl, int64_t now)
{
    for (size_t i = 0; i < RL_BUCKETS; i++) {
        struct rl_entry **pp = &rl->chains[i];
        while (*pp) {
            struct rl_entry *e = *pp;
            refill(rl, e, now);
            if (e->tokens >= rl->burst) {
                *pp = e->next;
                free(e->key);
                free(e);
                rl->nkeys--;
            } else {
                pp = &e->next;
            }
        }
    }
    if (rl->nkeys >= rl->max_keys) {
        log_warn("ratelimit_table_full", "keys=%zu action=reset", rl->nkeys);
        for (size_t i = 0; i < RL_BUCKETS; i++) {
            free_chain(rl->chains[i]);
            rl->chains[i] = NULL;
        }
        rl->nkeys = 0;
    }
}

static struct rl_entry *
lookup(struct ratelimit *rl, const char *key, int64_t now, bool create)
{
    struct rl_entry **chain = &rl->chains[hash_key(rl, key) & (RL_BUCKETS - 1)];
    for (struct rl_entry *e = *chain; e; e = e->next) {
        if (strcmp(e->key, key) == 0) {
            refill(rl, e, now);
            return e;
        }
    }
    if (!create) {
        return NULL;
    }
    if (rl->nkeys >= rl->max_keys) {
        sweep(rl, now);
    }
    struct rl_entry *e = xcalloc(1, sizeof(*e));
    e->key = xstrdup(key);
    e->tokens = rl->burst;
    e->last_ms = now;
    e->next = *chain;
    *chain = e;
    rl->nkeys++;
    return e;
}

int
ratelimit_take(struct ratelimit *rl, const char *key)
{
    int64_t now = time_mono_ms();
    int wait = 0;
    pthread_mutex_lock(&rl->lock);
    struct rl_entry *e = lookup(rl, key, now, true);
    if (e->tokens >= 1.0) {
        e->tokens -= 1.0;
    } else {
        double ms = (1.0 - e->tokens) / rl->rate;
        wait = (int)ceil(ms / 1000.0);
        if (wait < 1) {
            wait = 1;
        }
    }
    pthread_mutex_unlock(&rl->lock);
    return wait;
}

void
ratelimit_refund(struct ratelimit *rl, const char *key)
{
    int64_t now = time_mono_ms();
    pthread_mutex_lock(&rl->lock);
    struct rl_entry *e = lookup(rl, key, now, false);
    if (e) {
        e->tokens = fmin(rl->burst, e->tokens + 1.0);
    }
    pthread_mutex_unlock(&rl->lock);
}
