/* The logger role's key table. */
#include "logger_conf.h"

#include <stddef.h>

static const char *
validate(const void *data)
{
    const struct logger_conf *c = data;
    /* A batch can never fill if the broker may not push that many unacked messages. */
    if (c->amqp_prefetch < c->insert_batch) {
        return "amqp_prefetch must be at least insert_batch";
    }
    return NULL;
}

#define K(name, type, def, lo, hi, check, flags, help)                                             \
    {                                                                                              \
#name, type, def, offsetof(struct logger_conf, name), lo, hi, check, flags, help           \
    }

static const struct conf_key logger_keys[] = {
    K(logger_listen, CONF_STR, "127.0.0.1:4002", 0, 0, conf_check_hostport, 0,
      "Where the logger role accepts NestJS TCP requests (log.append, log.query, log.stats)."),
    K(mongo_url, CONF_STR, "mongodb://127.0.0.1:27017/chanced", 0, 0, conf_check_url_mongo,
      CONF_SECRET,
      "MongoDB holding the audit events (collection \"events\" of the URL's database)."),
    K(mongo_timeout_ms, CONF_INT, "10000", 500, 600000, NULL, 0,
      "MongoDB socket and server-selection deadline, unless the URL sets its own."),
    K(store_workers, CONF_INT, "4", 1, 64, NULL, 0,
      "Threads running MongoDB work for log.append, log.query and log.stats; a large insert "
      "is also split over this many connections at once."),
    K(amqp_prefetch, CONF_INT, "1000", 1, 65535, NULL, 0,
      "Unacknowledged audit messages RabbitMQ may push to the logger at once."),
    K(insert_batch, CONF_INT, "500", 1, 10000, NULL, 0,
      "Most events (and messages) the logger inserts in one MongoDB round trip when the queue is "
      "deep; a log.events message is taken whole."),
    K(max_event_bytes, CONF_INT, "65536", 1024, 4194304, NULL, 0,
      "Largest audit message accepted from the queue, a log.events batch included; bigger ones "
      "are dead-lettered."),
    K(retention_days, CONF_INT, "0", 0, 36500, NULL, 0,
      "Delete audit events older than this many days (MongoDB TTL index); 0 keeps them."),
    K(test_ack_delay_ms, CONF_INT, "0", 0, 60000, NULL, 0,
      "Testing only: wait this long between storing a batch and acknowledging it."),
    K(logger_health_listen, CONF_STR, "127.0.0.1:9102", 0, 0, conf_check_hostport, 0,
      "HTTP port of the logger role for /livez, /readyz and /metrics."),
};

const struct conf_module logger_conf_module = {
    "logger", logger_keys, ARRAY_SIZE(logger_keys), sizeof(struct logger_conf), validate,
};
