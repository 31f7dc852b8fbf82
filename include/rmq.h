/*
 * The one RabbitMQ link of the daemon (librabbitmq-c 0.11, synchronous), used by the chance
 * role's publisher and the logger's consumer: connect to the first node of amqp_url that
 * answers (amqp:// or amqps://), log in, open channel RMQ_CHANNEL and declare the audit topology
 * both sides rely on (their arguments must match exactly or the broker refuses):
 *
 *   exchange <queue>.dlx  fanout, durable                 dead-letter exchange
 *   queue    <queue>.dlq  durable, x-queue-type=quorum    dead-letter queue, bound to the dlx
 *   queue    <queue>      durable, x-queue-type=quorum, x-dead-letter-exchange=<queue>.dlx
 *
 * The queue has no delivery limit: a message goes to the dead-letter queue only when the
 * logger rejects it as unusable, never because consumers died while holding it.
 *
 * Declaring it needs configure on all three, write on <queue>.dlq and read on <queue>.dlx (the
 * binding), and read on <queue> and write on <queue>.dlx (RabbitMQ's rule for a queue with a
 * dead-letter exchange): read on <queue> is the right to consume it. A publisher whose broker
 * user has only write on amq.default (least privilege) is refused the declaration (403): then
 * it checks that the queue exists, declared by the logger or by the broker's definitions
 * (deploy/rabbitmq/definitions.json), and uses it as it is.
 *
 * A link is used by one thread; rmq_link_interrupt may be called from any thread to break a
 * blocked call (it shuts the socket down).
 */
#ifndef CHANCED_RMQ_H
#define CHANCED_RMQ_H

#include <amqp.h>
#include <stddef.h>

#include "util.h"

#define RMQ_CHANNEL 1

struct rmq_conf;
struct rmq_link;

/* What rmq_link_open does with the topology above. */
enum rmq_topology {
    RMQ_TOPOLOGY_DECLARE,          /* declare it: any failure fails the link (the logger) */
    RMQ_TOPOLOGY_DECLARE_OR_CHECK, /* declare it; if this user may not (403), the queue must
                                      exist (the chance relay, a publisher) */
};

/*
 * Opens a link and sees to the topology as `topology` says. The URLs of conf->amqp_url are
 * tried in turn starting at *next (updated to the one that worked, so a reconnect tries it
 * first); timeout_ms bounds the connect, the handshake and every RPC. NULL with err filled (no
 * secrets in it).
 */
struct rmq_link *rmq_link_open(const struct rmq_conf *conf, enum rmq_topology topology,
                               int timeout_ms, unsigned *next, char *err, size_t errlen);
/* Closes (politely when the socket still works) and frees. NULL is a no-op. */
void rmq_link_close(struct rmq_link *l);
/* Thread-safe: shuts the socket down so a call blocked on the owning thread returns. */
void rmq_link_interrupt(struct rmq_link *l);
/* The librabbitmq connection (borrowed; owned by the link). */
amqp_connection_state_t rmq_link_conn(struct rmq_link *l);
/* "host:port" of the node the link reached (borrowed). */
const char *rmq_link_peer(const struct rmq_link *l);

/* Writes "<what>: <why>" for a broker reply into err. */
void rmq_reply_error(amqp_rpc_reply_t r, const char *what, char *err, size_t errlen);
/* 0 if the last RPC on conn succeeded, else -1 with err filled. */
int rmq_check_rpc(amqp_connection_state_t conn, const char *what, char *err,
                  size_t errlen) MUSTCHECK;

#endif
