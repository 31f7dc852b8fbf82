/*
 * The RabbitMQ keys shared by the chance role (publishes audit events) and the logger role
 * (consumes them): one module, so both read the same URL list and queue name.
 */
#ifndef CHANCED_RMQ_CONF_H
#define CHANCED_RMQ_CONF_H

#include "conf.h"

struct rmq_conf {
    char *amqp_url;      /* comma-separated amqp:// or amqps:// URLs, tried in order */
    char *amqp_queue;    /* durable quorum queue of audit events */
    char *amqp_tls_ca;   /* CA file verifying amqps:// brokers ("" = system store) */
    char *amqp_tls_cert; /* client certificate for amqps:// ("" = none) */
    char *amqp_tls_key;  /* its key (secret) */
};

extern const struct conf_module rmq_conf_module;

#endif
