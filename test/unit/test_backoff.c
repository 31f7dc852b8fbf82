/* Unit tests of the backoff helper: growth, cap, jitter bounds, reset, throttled logging. */
#include <string.h>

#include "backoff.h"
#include "harness.h"
#include "log.h"
#include "util.h"

static void
test_growth_and_cap(void)
{
    struct backoff b;
    backoff_init(&b, 100, 1000);
    int nominal[] = {100, 200, 400, 800, 1000, 1000, 1000};
    for (size_t i = 0; i < ARRAY_SIZE(nominal); i++) {
        int d = backoff_next(&b);
        CHECK(d <= nominal[i] && d >= nominal[i] * 3 / 4, "step %zu: %d not in [%d, %d]", i, d,
              nominal[i] * 3 / 4, nominal[i]);
    }
    backoff_reset(&b);
    int d = backoff_next(&b);
    CHECK(d >= 75 && d <= 100, "after reset: %d", d);
}

static void
test_bad_bounds(void)
{
    struct backoff b;
    backoff_init(&b, 0, -5);
    CHECK(b.min_ms == 1 && b.max_ms == 1, "bounds %d %d", b.min_ms, b.max_ms);
    CHECK(backoff_next(&b) == 1, "tiny delay");
}

static void
test_throttled_log(void)
{
    struct backoff b;
    backoff_init(&b, 10, 20);
    CHECK(backoff_fail(&b, "test_failure", "down"), "first failure logged");
    CHECK(!backoff_fail(&b, "test_failure", "down"), "repeat logged");
    CHECK(backoff_fail(&b, "test_failure", "refused"), "a new reason is logged");
    CHECK(b.failures == 3, "failures %d", b.failures);
    b.last_log_ms -= BACKOFF_LOG_MS;
    CHECK(backoff_fail(&b, "test_failure", "refused"), "a persisting failure is logged again");
    backoff_reset(&b);
    CHECK(b.failures == 0 && backoff_fail(&b, "test_failure", "refused"), "reset forgets");
}

static const struct test_case cases[] = {
    {"growth_and_cap", test_growth_and_cap},
    {"bad_bounds", test_bad_bounds},
    {"throttled_log", test_throttled_log},
};

int
main(void)
{
    log_set_level(LOG_ERROR);
    return harness_run("backoff", cases, ARRAY_SIZE(cases));
}
