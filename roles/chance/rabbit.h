/*
 * Interface of amqp.c (named rabbit.h because an "amqp.h" here would shadow librabbitmq's
 * <amqp.h> under -Iroles/chance).
 *
 * The chance relay's RabbitMQ adapter (librabbitmq-c 0.11, blocking calls): one connection and
 * channel in confirm mode publishing persistent messages to the audit queue through the default
 * exchange. Publishing never waits for confirms: many messages may be in flight, and their
 * confirms are read as they come. librabbitmq has no confirm helper, so this file reads
 * basic.ack, basic.nack and basic.return itself. It declares the same topology as the logger, through
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
 * queue, without waiting: it joins the window of messages the broker has not settled yet. -1
 * with err if the link broke.
 */
int chance_amqp_publish(struct chance_amqp *a, const char *body, size_t len, const char *message_id,
                        char *err, size_t errlen) MUSTCHECK;
/*
 * Waits up to timeout_ms until the broker sent something or wake_fd (-1: none) is readable,
 * then reads every frame already there without blocking: confirms settle messages of the window,
 * heartbeats are answered. 0 with timeout_ms 0 only reads. -1 with err when the link broke or
 * the broker returned a message (close the link: none of the messages not reported yet counts
 * as confirmed).
 */
int chance_amqp_wait(struct chance_amqp *a, int timeout_ms, int wake_fd, char *err,
                     size_t errlen) MUSTCHECK;
/*
 * Reports the settled messages at the head of the window, in publish order, and drops them
 * from it: confirmed[i] is true when the broker acked message i, false when it nacked it.
 * Returns how many (at most max); a message still pending stops the report there.
 */
size_t chance_amqp_settled(struct chance_amqp *a, bool *confirmed, size_t max);
/* Messages published and not reported yet; *oldest_ms (if not NULL) is when the first of them
 * was published (time_mono_ms), 0 if none. */
size_t chance_amqp_unsettled(const struct chance_amqp *a, int64_t *oldest_ms);

/* Thread-safe: shuts the socket down so a call blocked on the owning thread returns. */
void chance_amqp_interrupt(struct chance_amqp *a);

#endif
