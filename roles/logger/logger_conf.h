/* The logger role's configuration keys (roles/logger/logger_conf.c holds the table). */
#ifndef CHANCED_LOGGER_CONF_H
#define CHANCED_LOGGER_CONF_H

#include "conf.h"

struct logger_conf {
    char *logger_listen;         /* RPC listen address (log.append, log.query, log.stats) */
    char *mongo_url;             /* mongodb://host:port/db?options */
    long long mongo_timeout_ms;  /* socket and server-selection deadline when the URL has none */
    long long store_workers;     /* threads running report queries and log.append inserts */
    long long amqp_prefetch;     /* unacked deliveries the broker may push to us */
    long long insert_batch;      /* events per insert when the queue is deep */
    long long max_event_bytes;   /* larger queue messages are dead-lettered */
    long long retention_days;    /* TTL on stored events; 0 keeps them forever */
    long long test_ack_delay_ms; /* fault injection: pause between insert and ack */
    char *logger_health_listen;  /* /livez /readyz /metrics */
};

extern const struct conf_module logger_conf_module;

#endif
