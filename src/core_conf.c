/* The core's configuration keys. */
#include "core_conf.h"

#include <stddef.h>
#include <string.h>

static const char *
check_level(const char *v)
{
    static const char *ok[] = {"error", "warn", "info", "debug"};
    for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
        if (strcmp(v, ok[i]) == 0) {
            return NULL;
        }
    }
    return "expected error, warn, info or debug";
}

static const char *
check_format(const char *v)
{
    return strcmp(v, "json") == 0 || strcmp(v, "text") == 0 || strcmp(v, "auto") == 0
               ? NULL
               : "expected json, text or auto";
}

#define K(name, type, def, lo, hi, check, flags, help)                                             \
    {                                                                                              \
#name, type, def, offsetof(struct core_conf, name), lo, hi, check, flags, help             \
    }

static const struct conf_key core_keys[] = {
    K(log_level, CONF_STR, "info", 0, 0, check_level, CONF_RELOAD,
      "Diagnostics threshold: error, warn, info or debug."),
    K(log_format, CONF_STR, "auto", 0, 0, check_format, 0,
      "json (one object per line), text, or auto (text on a TTY)."),
    K(log_file, CONF_STR, "", 0, 0, NULL, 0,
      "Append diagnostics here instead of stdout; reopened on SIGHUP."),
    K(max_frame_bytes, CONF_INT, "1048576", 64, 64 << 20, NULL, 0,
      "Largest accepted NestJS TCP frame (UTF-16 units)."),
    K(frame_stall_ms, CONF_INT, "10000", 100, 600000, NULL, 0,
      "A peer that leaves a frame unfinished this long is disconnected."),
    K(shutdown_timeout_ms, CONF_INT, "10000", 100, 600000, NULL, 0,
      "Bound on draining in-flight work after SIGTERM."),
    K(max_conns, CONF_INT, "4096", 1, 1000000, NULL, 0, "Connections accepted per RPC listener."),
};

const struct conf_module core_conf_module = {
    "core", core_keys, ARRAY_SIZE(core_keys), sizeof(struct core_conf), NULL,
};
