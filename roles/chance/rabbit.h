/*
 * Interface of amqp.c (named rabbit.h because an "amqp.h" here would shadow librabbitmq's
 * <amqp.h> under -Iroles/chance).
 *
 * The chance relay's RabbitMQ adapter (librabbitmq-c 0.11, synchronous): one connection and
 * channel in confirm mode publishing persistent messages to the audit queue through the default
 * exchange. librabbitmq has no confirm-wait helper, so this file reads basic.ack, basic.nack and
 * basic.return itself. It declares the same topology as the logger, through
 * rmq_declare_topology (include/rmq.h).
 *
 * Only the thread that opened a link may use it, except chance_amqp_interrupt.
 */
#ifndef CHANCED_CHANCE_RABBIT_H
#define CHANCED_CHANCE_RABBIT_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

struct chance_amqp;
struct rmq_conf;

/*
 * Connects, logs in, declares the topology and enables publisher confirms. timeout_ms bounds
 * the connect and each RPC. NULL with err filled (no secrets in it).
 */
struct chance_amqp *chance_amqp_open(const struct rmq_conf *rmq, int timeout_ms, unsigned *next_url,
                                     char *err, size_t errlen);
/* "host:port" of the broker node reached (borrowed). */
const char *chance_amqp_peer(const struct chance_amqp *a);
/* Closes and frees. NULL is a no-op. */
void chance_amqp_close(struct chance_amqp *a);

/*
 * Publishes body (borrowed) as a persistent JSON message with message_id, mandatory, to the
 * queue; it joins the current confirm round. -1 with err if the link broke.
 */
int chance_amqp_publish(struct chance_amqp *a, const char *body, size_t len, const char *message_id,
                        char *err, size_t errlen) MUSTCHECK;
/*
 * Waits up to timeout_ms for the broker to settle every message of the round, then starts a
 * new round. confirmed[i] (one per publish of the round, in order) is set true when message i
 * was acked and the round saw no basic.return; false otherwise (nacked, returned, or not
 * settled in time). Returns 0 if every message was settled, -1 with err if not (timeout or a
 * broken link: close it and start over; unconfirmed messages must be published again).
 */
int chance_amqp_confirm(struct chance_amqp *a, int timeout_ms, bool *confirmed, char *err,
                        size_t errlen) MUSTCHECK;
/* Messages published in the current round. */
size_t chance_amqp_round_size(const struct chance_amqp *a);

/* Thread-safe: shuts the socket down so a call blocked on the owning thread returns. */
void chance_amqp_interrupt(struct chance_amqp *a);

#endif
