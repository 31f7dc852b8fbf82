/*
 * The audit publisher of the chance role: a thread that publishes the relay's messages to
 * RabbitMQ in confirm mode (librabbitmq is blocking, so it never runs on the loop) and hands
 * every message back to the loop with its outcome. A message counts as published only once the
 * broker confirmed it; the relay deletes its stream entry then, and publishes the others again.
 */
#ifndef CHANCED_CHANCE_PUBLISHER_H
#define CHANCED_CHANCE_PUBLISHER_H

#include <stdbool.h>
#include <stddef.h>

struct loop;
struct publisher;
struct rmq_conf;

/* One message; owned by whoever holds it (the relay, then the publisher, then the relay). */
/* A stream entry a message carries. */
struct pub_entry {
    void *stream; /* the relay's stream (borrowed tag) */
    char id[48];  /* the entry's id */
};

struct pub_item {
    struct pub_item *next;     /* list link */
    char *body;                /* owned message body */
    size_t len;                /* its length */
    char msgid[201];           /* AMQP message_id: the event _id (of the first, in a batch) */
    struct pub_entry *entries; /* owned: the stream entries it carries, one per event */
    int nentries;              /* their number (1: a log.event message; more: log.events) */
    bool confirmed;            /* set by the publisher: the broker confirmed it */
};

/* Called on the loop thread with a list of items back from the publisher (the callee owns it). */
typedef void (*publisher_done_fn)(struct pub_item *items, void *arg);

/* Starts the thread. Messages are published as soon as they are queued, without waiting for
 * the confirms of earlier ones; at most 4 * batch are in flight. Never NULL. */
struct publisher *publisher_new(struct loop *loop, const struct rmq_conf *rmq, int batch,
                                publisher_done_fn done, void *arg);
/* Stops the thread (the messages in flight are waited for, bounded; a stuck socket is
 * interrupted) and frees every item it still holds (their entries stay in Redis). NULL is a
 * no-op. */
void publisher_free(struct publisher *p);
/* Queues a list of items (takes ownership). Any thread. */
void publisher_submit(struct publisher *p, struct pub_item *items);
/* True while connected to RabbitMQ. Any thread. */
bool publisher_connected(const struct publisher *p);
/* Messages confirmed since start. Any thread. */
unsigned long long publisher_published(const struct publisher *p);

/* Frees a list of items. */
void pub_items_free(struct pub_item *items);

#endif
