/*
 * Token-bucket rate limits keyed by strings (a username, a client address, a user id), shared by
 * every worker thread. Memory is bounded: idle buckets are swept when the table fills.
 */
#ifndef CHANCED_GATEWAY_RATELIMIT_H
#define CHANCED_GATEWAY_RATELIMIT_H

#include <stddef.h>

struct ratelimit;

/* rate tokens per second, up to burst saved; at most max_keys buckets. Never NULL. */
struct ratelimit *ratelimit_new(double rate, double burst, size_t max_keys);
void ratelimit_free(struct ratelimit *rl);
/* Takes one token for key: 0 if allowed, else the whole seconds until one is available (>= 1). */
int ratelimit_take(struct ratelimit *rl, const char *key);
/* Gives back a token taken by ratelimit_take (when the attempt turned out not to count). */
void ratelimit_refund(struct ratelimit *rl, const char *key);
/* Room for a client's bucket key (http_client_bucket: IPv6 by /64, see clientaddr.h). */
#define RATELIMIT_ADDR_MAX 64

#endif
