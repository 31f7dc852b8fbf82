/* The logger role: not built yet; starting it fails with a clear message. */
#include <stddef.h>

#include "conf.h"
#include "log.h"
#include "role.h"

static void *
logger_start(struct role_ctx *ctx)
{
    (void)ctx;
    log_error("role_unavailable", "role=logger reason=\"not built in this version\"");
    return NULL;
}

static void
logger_noop(void *state)
{
    (void)state;
}

static const struct conf_module logger_conf_module = {"logger", NULL, 0, 1, NULL};

const struct role role_logger = {
    "logger", &logger_conf_module, logger_start, logger_noop, NULL, logger_noop, NULL, NULL, NULL,
};
