/*
 * Retry pacing and throttled failure logging, shared by every loop that reconnects or retries
 * (the RPC client, the Redis client, chance's publisher and generation driver, the logger's
 * consumer): exponential backoff with jitter between min_ms and max_ms, and a failure
 * log line that is written when the reason changes or, if it persists, every BACKOFF_LOG_MS.
 *
 * Embedded by its owner and used by one thread at a time.
 */
#ifndef CHANCED_BACKOFF_H
#define CHANCED_BACKOFF_H

#include <stdbool.h>
#include <stdint.h>

#define BACKOFF_LOG_MS 30000 /* a failure that persists is logged again this often */

struct backoff {
    int min_ms;          /* first delay */
    int max_ms;          /* cap */
    int next_ms;         /* the delay backoff_next returns next (before jitter) */
    char last_why[256];  /* the failure logged last, "" after a success */
    int64_t last_log_ms; /* monotonic time of that log line */
    int failures;        /* consecutive failures since the last reset */
};

void backoff_init(struct backoff *b, int min_ms, int max_ms);
/* The delay before the next attempt (jittered to 75..100% of the nominal delay, so a fleet of
 * clients does not retry in lockstep), then doubles the nominal delay up to max_ms. */
int backoff_next(struct backoff *b);
/* A success: the next failure starts again at min_ms and is logged at once. */
void backoff_reset(struct backoff *b);
/*
 * Records a failure: logs event at warn level with reason=why and the next delay when why
 * differs from the last logged reason or BACKOFF_LOG_MS have passed; returns true if it logged.
 */
bool backoff_fail(struct backoff *b, const char *event, const char *why);

#endif
