/*
 * Interface of amqp.c (named rabbit.h because an "amqp.h" here would shadow librabbitmq's
 * <amqp.h> under -Iroles/logger).
 *
 * The logger's RabbitMQ adapter (librabbitmq-c 0.11, synchronous): one connection and channel
 * consuming the audit queue with manual acks and a prefetch window. It declares the same
 * topology as the chance relay, through rmq_declare_topology (include/rmq.h).
 *
 * Only the thread that opened a link may use it (librabbitmq connections are not thread-safe),
 * except logger_amqp_interrupt.
 */
#ifndef CHANCED_LOGGER_RABBIT_H
#define CHANCED_LOGGER_RABBIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct logger_amqp;

struct rmq_conf;

struct logger_amqp_opts {
    const struct rmq_conf *rmq; /* URLs, queue, TLS files (borrowed) */
    unsigned *next_url;         /* which URL to try first; updated (borrowed) */
    int prefetch;               /* basic.qos prefetch_count */
    size_t max_body;            /* larger bodies are delivered with oversize set and no bytes */
    int timeout_ms;             /* connect and RPC deadline */
};

/* One delivery. body is owned by the message (free with logger_amqp_msg_cleanup). */
struct logger_amqp_msg {
    uint64_t tag;     /* delivery tag, for ack/reject */
    bool redelivered; /* the broker delivered it before */
    bool oversize;    /* the body exceeded max_body and was discarded */
    char *body;       /* NUL-terminated body, NULL if oversize */
    size_t len;       /* body bytes (the announced size if oversize) */
};

/*
 * Connects, logs in, opens a channel, declares the topology and sets the prefetch, but does not
 * consume yet. NULL with err filled (a sentence for logs; no secrets).
 */
struct logger_amqp *logger_amqp_open(const struct logger_amqp_opts *opts, char *err, size_t errlen);
/* Closes the channel and connection (unacked deliveries go back to the queue). NULL: no-op. */
void logger_amqp_close(struct logger_amqp *a);

/* Starts consuming with manual acks. -1 with err. */
int logger_amqp_consume(struct logger_amqp *a, char *err, size_t errlen) MUSTCHECK;
/*
 * Cancels the consumer: no new deliveries after this returns; deliveries that arrived before
 * the cancel-ok keep coming out of logger_amqp_next. -1 with err.
 */
int logger_amqp_cancel(struct logger_amqp *a, char *err, size_t errlen) MUSTCHECK;

/*
 * Waits up to timeout_ms (0: only what is already here) for the next delivery. Returns 1 with
 * *msg filled, 0 if none arrived in time, -1 if the link is broken (err says why; close it).
 * Heartbeats are sent and checked while waiting.
 */
int logger_amqp_next(struct logger_amqp *a, int timeout_ms, struct logger_amqp_msg *msg, char *err,
                     size_t errlen) MUSTCHECK;
void logger_amqp_msg_cleanup(struct logger_amqp_msg *msg);

/* Acknowledges tag (and with multiple every earlier unsettled tag). -1 if the link broke. */
int logger_amqp_ack(struct logger_amqp *a, uint64_t tag, bool multiple) MUSTCHECK;
/* Rejects tag without requeue: the broker dead-letters it. -1 if the link broke. */
int logger_amqp_reject(struct logger_amqp *a, uint64_t tag) MUSTCHECK;

/* Thread-safe: shuts the socket down so a blocked call on the owning thread returns. */
void logger_amqp_interrupt(struct logger_amqp *a);

#endif
