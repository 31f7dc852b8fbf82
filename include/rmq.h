/*
 * RabbitMQ pieces shared by the chance relay and the logger (librabbitmq-c 0.11, synchronous):
 * connect + login from an amqp:// URL, error text for broker replies, and the one queue
 * topology both roles declare (their arguments must match exactly or the broker refuses):
 *
 *   exchange <queue>.dlx  fanout, durable              dead-letter exchange
 *   queue    <queue>.dlq  durable, bound to the dlx    dead-letter queue
 *   queue    <queue>      durable, x-queue-type=quorum, x-dead-letter-exchange=<queue>.dlx,
 *                         x-delivery-limit=<delivery_limit>
 */
#ifndef CHANCED_RMQ_H
#define CHANCED_RMQ_H

#include <amqp.h>
#include <stddef.h>

#include "util.h"

/* Writes "<what>: <why>" for a broker reply into err. */
void rmq_reply_error(amqp_rpc_reply_t r, const char *what, char *err, size_t errlen);
/* 0 if the last RPC on conn succeeded, else -1 with err filled. */
int rmq_check_rpc(amqp_connection_state_t conn, const char *what, char *err,
                  size_t errlen) MUSTCHECK;
/*
 * Opens a TCP socket to the URL's host and logs in (timeout_ms bounds the connect, handshake and
 * every RPC). on_socket(fd, arg), if set, runs once the socket exists, before the login, so the
 * caller can make a blocked login interruptible. -1 with err filled (no secrets in it).
 */
int rmq_connect(amqp_connection_state_t conn, const char *url, int timeout_ms,
                void (*on_socket)(int fd, void *arg), void *arg, char *err,
                size_t errlen) MUSTCHECK;
/* Declares the topology above on channel. -1 with err filled. */
int rmq_declare_topology(amqp_connection_state_t conn, amqp_channel_t channel, const char *queue,
                         int delivery_limit, char *err, size_t errlen) MUSTCHECK;

#endif
