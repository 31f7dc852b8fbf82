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
    K(rpc_idle_timeout_ms, CONF_INT, "300000", 0, 86400000, NULL, 0,
      "An RPC connection with no call in flight and no request for this long is closed (0: "
      "never)."),
    K(rpc_max_inflight, CONF_INT, "256", 1, 100000, NULL, 0,
      "Calls in flight per RPC connection; beyond it the server reads no more requests from "
      "that connection until one finishes."),
    K(rpc_tls_ca, CONF_STR, "", 0, 0, NULL, 0,
      "CA file of the internal NestJS TCP links: listeners require client certificates signed "
      "by it, the gateway verifies chance and logger against it (empty: no TLS)."),
    K(rpc_tls_cert, CONF_STR, "", 0, 0, NULL, 0,
      "Certificate file this process presents on the internal links (server and client)."),
    K(rpc_tls_key, CONF_STR, "", 0, 0, NULL, CONF_SECRET, "Private key of rpc_tls_cert."),
    K(rpc_insecure, CONF_BOOL, "false", 0, 0, NULL, 0,
      "Allow the internal links without mutual TLS on addresses other than loopback."),
};

const struct conf_module core_conf_module = {
    "core", core_keys, ARRAY_SIZE(core_keys), sizeof(struct core_conf), NULL,
};
