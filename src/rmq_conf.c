/* The shared RabbitMQ key table (module "rmq"). */
#include "rmq_conf.h"

#include <stddef.h>

#define K(name, type, def, lo, hi, check, flags, help)                                             \
    {                                                                                              \
#name, type, def, offsetof(struct rmq_conf, name), lo, hi, check, flags, help              \
    }

static const struct conf_key rmq_keys[] = {
    K(amqp_url, CONF_STR, "amqp://guest:guest@127.0.0.1:5672/", 0, 0, conf_check_url_amqp,
      CONF_SECRET,
      "RabbitMQ for audit events (chance publishes, logger consumes): one URL or a "
      "comma-separated list of cluster nodes, tried in order; amqps:// for TLS."),
    K(amqp_queue, CONF_STR, "chanced.events", 0, 0, conf_check_queue_name, 0,
      "Durable quorum queue of audit events (its dead-letter queue is <name>.dlq)."),
    K(amqp_tls_ca, CONF_STR, "", 0, 0, NULL, 0,
      "CA certificate file that amqps:// brokers must chain to (empty: the system store)."),
    K(amqp_tls_cert, CONF_STR, "", 0, 0, NULL, 0,
      "Client certificate file for amqps:// (empty: none)."),
    K(amqp_tls_key, CONF_STR, "", 0, 0, NULL, CONF_SECRET, "Private key file of amqp_tls_cert."),
};

const struct conf_module rmq_conf_module = {
    "rmq", rmq_keys, ARRAY_SIZE(rmq_keys), sizeof(struct rmq_conf), NULL,
};
