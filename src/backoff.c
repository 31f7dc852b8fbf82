/* Exponential backoff with jitter and throttled failure logs. */
#include "backoff.h"

#include <stdio.h>
#include <string.h>

#include "log.h"
#include "util.h"

void
backoff_init(struct backoff *b, int min_ms, int max_ms)
{
    memset(b, 0, sizeof(*b));
    b->min_ms = min_ms > 0 ? min_ms : 1;
    b->max_ms = max_ms >= b->min_ms ? max_ms : b->min_ms;
    b->next_ms = b->min_ms;
}

int
backoff_next(struct backoff *b)
{
    int nominal = b->next_ms;
    b->next_ms = nominal > b->max_ms / 2 ? b->max_ms : nominal * 2;
    /* 75..100% of nominal: spreads reconnects of many clients after a shared outage. */
    int spread = nominal / 4;
    return nominal - (spread > 0 ? (int)util_random_below((uint64_t)spread + 1) : 0);
}

void
backoff_reset(struct backoff *b)
{
    b->next_ms = b->min_ms;
    b->last_why[0] = '\0';
    b->failures = 0;
}

bool
backoff_fail(struct backoff *b, const char *event, const char *why)
{
    int64_t now = time_mono_ms();
    b->failures++;
    if (strcmp(b->last_why, why) == 0 && now - b->last_log_ms < BACKOFF_LOG_MS) {
        return false;
    }
    log_warn(event, "reason=\"%s\" failures=%d retry_ms=%d", why, b->failures, b->next_ms);
    snprintf(b->last_why, sizeof(b->last_why), "%s", why);
    b->last_log_ms = now;
    return true;
}
