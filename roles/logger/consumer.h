/*
 * The queue consumer: one thread that takes audit messages from RabbitMQ, validates them,
 * inserts them into MongoDB in batches (unordered, journaled, _id = event id) and only then
 * acknowledges them. Unparseable messages are rejected without requeue, so the broker moves
 * them to the dead-letter queue. When MongoDB is unreachable the thread holds its batch
 * unacknowledged and retries with backoff, so the prefetch window stops the flow: nothing is
 * requeued in a loop and no valid event is dead-lettered because the store is down.
 *
 * Ownership: the logger owns the consumer; the consumer borrows the store and the loop.
 */
#ifndef CHANCED_LOGGER_CONSUMER_H
#define CHANCED_LOGGER_CONSUMER_H

#include <stdbool.h>
#include <stdint.h>

#include "loop.h"

struct logger_conf;
struct rmq_conf;
struct logger_consumer;
struct logger_mongo;

/* Counters and states for /metrics and /readyz; a snapshot, read from any thread. */
struct logger_consumer_stats {
    uint64_t received;        /* deliveries (messages) taken from the queue */
    uint64_t events_received; /* events those messages carried (a log.events one: 1..1000) */
    uint64_t stored;          /* events inserted */
    uint64_t duplicates;      /* events already stored (redeliveries): acknowledged */
    uint64_t dead_lettered;   /* messages rejected to the dead-letter queue */
    uint64_t batches;         /* insert round trips that succeeded */
    uint64_t store_errors;    /* insert attempts that failed (and were retried) */
    uint64_t reconnects;      /* RabbitMQ connections opened */
    bool amqp_up;             /* consuming now */
    bool store_up;            /* the last MongoDB call succeeded */
    bool paused;              /* holding a batch until MongoDB answers again */
};

/*
 * Starts the thread. on_ready(arg) is posted to the loop once, after the store's indexes exist
 * (the role is then ready); on_exit(arg) is posted when the thread has finished after
 * logger_consumer_stop. conf and store are borrowed for the consumer's life.
 */
struct logger_consumer *logger_consumer_new(const struct logger_conf *conf,
                                            const struct rmq_conf *rmq, struct logger_mongo *store,
                                            struct loop *loop, loop_fn on_ready, loop_fn on_exit,
                                            void *arg);
/* Asks the thread to finish: stop consuming, store and acknowledge what it holds, close. */
void logger_consumer_stop(struct logger_consumer *c);
/* Joins the thread (interrupting a blocked socket first) and frees. NULL is a no-op. */
void logger_consumer_free(struct logger_consumer *c);
void logger_consumer_stats(const struct logger_consumer *c, struct logger_consumer_stats *out);

#endif
