/*
 * The audit relay of the chance role: moves events from the Redis streams to RabbitMQ with
 * publisher confirms, deleting a stream entry only after its confirm. It runs on its own thread
 * (hiredis sync + librabbitmq are blocking) and never blocks claims: when RabbitMQ is down the
 * events simply wait in Redis.
 *
 * Streams: "chance:{g}:events" (batch-level events) and "chance:{c<id>}:events" for each id in
 * the sorted set "chance:categories". Each entry has one field "e": the event JSON (docs/protocol.md).
 */
#ifndef CHANCED_CHANCE_RELAY_H
#define CHANCED_CHANCE_RELAY_H

#include <stdbool.h>

struct chance_conf;
struct rmq_conf;
struct relay;

/* Starts the relay thread; conf is borrowed for the relay's life. NULL if the thread failed. */
struct relay *relay_new(const struct chance_conf *conf, const struct rmq_conf *rmq);
/* Asks the thread to finish the batch in hand, joins it and frees. NULL is a no-op. */
void relay_free(struct relay *relay);
/* For metrics and readiness: true while connected to RabbitMQ. Thread-safe. */
bool relay_connected(const struct relay *relay);
/* Events published and confirmed since start. Thread-safe. */
unsigned long long relay_published(const struct relay *relay);

#endif
