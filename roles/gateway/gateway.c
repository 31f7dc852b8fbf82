/* The gateway role: not built yet; starting it fails with a clear message. */
#include <stddef.h>

#include "conf.h"
#include "log.h"
#include "role.h"

static void *
gateway_start(struct role_ctx *ctx)
{
    (void)ctx;
    log_error("role_unavailable", "role=gateway reason=\"not built in this version\"");
    return NULL;
}

static void
gateway_noop(void *state)
{
    (void)state;
}

static const struct conf_module gateway_conf_module = {"gateway", NULL, 0, 1, NULL};

const struct role role_gateway = {
    "gateway", &gateway_conf_module, gateway_start, gateway_noop, NULL, gateway_noop, NULL, NULL, NULL,
};
