/* The chance role's key table. */
#include "chance_conf.h"

#include <stddef.h>

#define K(name, type, def, lo, hi, check, flags, help)                                             \
    {                                                                                              \
#name, type, def, offsetof(struct chance_conf, name), lo, hi, check, flags, help           \
    }

static const struct conf_key chance_keys[] = {
    K(chance_listen, CONF_STR, "127.0.0.1:4001", 0, 0, conf_check_hostport, 0,
      "Where the chance role accepts NestJS TCP requests."),
    K(redis_url, CONF_STR, "redis://127.0.0.1:6379/0", 0, 0, conf_check_url_redis, CONF_SECRET,
      "Redis (or Redis Stack) holding categories and codes."),
    K(redis_timeout_ms, CONF_INT, "5000", 100, 600000, NULL, 0,
      "Deadline for connecting to Redis and for each command."),
    K(redis_tls_ca, CONF_STR, "", 0, 0, NULL, 0,
      "rediss://: CA file the Redis servers' certificates must chain to (empty: system store)."),
    K(redis_tls_cert, CONF_STR, "", 0, 0, NULL, 0,
      "rediss://: client certificate file, for servers that require one (empty: none)."),
    K(redis_tls_key, CONF_STR, "", 0, 0, NULL, CONF_SECRET, "Private key of redis_tls_cert."),
    K(max_codes_per_batch, CONF_INT, "2000000", 1, 100000000, NULL, 0,
      "Largest number of codes one generate request may create."),
    K(code_length, CONF_INT, "12", 12, 32, NULL, 0,
      "Random characters per code (31-letter alphabet without look-alikes)."),
    K(generate_chunk, CONF_INT, "2000", 10, 100000, NULL, 0,
      "Codes written per pipelined round trip while generating."),
    K(generate_busy_share, CONF_INT, "20", 1, 100, NULL, 0,
      "While claims are being served (one in the last 250 ms, by any instance), generation keeps "
      "one chunk of at most 250 codes in flight and rests between chunks, so that it has a "
      "chunk in flight at most this percent of the time: claims in other categories keep Redis "
      "and the CPU. 100: never yield."),
    K(generate_give_up_ms, CONF_INT, "60000", 1000, 86400000, NULL, 0,
      "A batch whose steps keep failing for this long (Redis down, out of memory, read-only) is "
      "closed as failed: its partial categories are removed and batch.failed is audited."),
    K(relay_batch, CONF_INT, "500", 1, 10000, NULL, 0,
      "Entries the chance relay reads per stream and round trip (packed into messages of up to "
      "100 events); it reads no more while 8x this many await the broker's confirms."),
    K(relay_sweep_ms, CONF_INT, "1000", 10, 600000, NULL, 0,
      "Every audit stream is read this often (streams this instance writes to are read within 5 "
      "ms)."),
    K(relay_claim_idle_ms, CONF_INT, "60000", 1000, 86400000, NULL, 0,
      "Audit events another chance instance read but did not publish for this long are taken "
      "over (an instance that died)."),
    K(assignment_log_retention_s, CONF_INT, "604800", 0, 315360000, NULL, 0,
      "Assignment-log entries (what the gateways' reconcilers read) older than this are trimmed "
      "as new ones are written (0: keep all). Longer than any gateway outage you would sit out."),
    K(chance_health_listen, CONF_STR, "127.0.0.1:9101", 0, 0, conf_check_hostport, 0,
      "HTTP port of the chance role for /livez, /readyz and /metrics."),
};

const struct conf_module chance_conf_module = {
    "chance", chance_keys, ARRAY_SIZE(chance_keys), sizeof(struct chance_conf), NULL,
};
