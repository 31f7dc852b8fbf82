/*
 * The audit relay of the chance role: moves the events the Lua scripts append to each
 * category's stream (and the batch events of "chance:{g}:events") to RabbitMQ, publishing each
 * about once however many chance instances run:
 *
 * - every stream is read through the consumer group "relay" (XREADGROUP ... >), so an entry
 *   goes to one instance; after the broker confirms it, XACK + XDEL remove it;
 * - entries a dead instance held are taken over with XAUTOCLAIM once idle for
 *   relay_claim_idle_ms;
 * - a stream this instance just wrote to is read at once (relay_touch), which keeps the lag
 *   from operation to broker in milliseconds; every stream is swept every relay_sweep_ms for
 *   what other instances or earlier runs left.
 *
 * Runs on the chance loop with the role's Redis client; the blocking RabbitMQ side is the
 * publisher thread (publisher.h). Entries stay in Redis until confirmed, so a relay or broker
 * outage delays events and loses none; the logger stores each _id once.
 */
#ifndef CHANCED_CHANCE_RELAY_H
#define CHANCED_CHANCE_RELAY_H

#include <stdbool.h>

struct chance_conf;
struct loop;
struct metrics;
struct redis;
struct relay;
struct rmq_conf;

/* Starts the relay (and its publisher thread). Everything passed is borrowed. */
struct relay *relay_new(struct loop *loop, struct redis *redis, struct metrics *metrics,
                        const struct chance_conf *conf, const struct rmq_conf *rmq);
/* Stops and frees; events not confirmed stay in Redis for the next run. NULL is a no-op. */
void relay_free(struct relay *r);
/* An event was appended to the stream of category (0: the global stream): read it soon. */
void relay_touch(struct relay *r, long long category);
/* True while connected to RabbitMQ. */
bool relay_connected(const struct relay *r);

#endif
