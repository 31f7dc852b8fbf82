/* The chance relay's RabbitMQ adapter: publishing in confirm mode and reading the confirms. */
#include "rabbit.h"

#include <amqp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rmq.h"
#include "rmq_conf.h"

enum { PENDING, ACKED, NACKED };

struct chance_amqp {
    struct rmq_link *link;        /* owned */
    amqp_connection_state_t conn; /* borrowed from link */
    char *queue;                  /* owned copy of the name */
    uint64_t next_seq;            /* confirm sequence number of the next publish (from 1) */
    uint64_t round_first;         /* sequence number of the round's first message */
    unsigned char *state;         /* per message of the round: PENDING, ACKED, NACKED */
    size_t n, cap;                /* messages in the round / allocated */
    size_t pending;               /* of them not settled yet */
    bool returned;                /* the broker returned a message of this round */
};

struct chance_amqp *
chance_amqp_open(const struct rmq_conf *rmq, int timeout_ms, unsigned *next_url, char *err,
                 size_t errlen)
{
    struct chance_amqp *a = xcalloc(1, sizeof(*a));
    a->queue = xstrdup(rmq->amqp_queue);
    a->next_seq = a->round_first = 1;
    if ((a->link = rmq_link_open(rmq, RMQ_TOPOLOGY_DECLARE_OR_CHECK, timeout_ms, next_url, err,
                                 errlen)) == NULL) {
        goto fail;
    }
    a->conn = rmq_link_conn(a->link);
    amqp_confirm_select(a->conn, RMQ_CHANNEL);
    if (rmq_check_rpc(a->conn, "enable publisher confirms", err, errlen) != 0) {
        goto fail;
    }
    return a;
fail:
    chance_amqp_close(a);
    return NULL;
}

void
chance_amqp_close(struct chance_amqp *a)
{
    if (a == NULL) {
        return;
    }
    rmq_link_close(a->link);
    free(a->state);
    free(a->queue);
    free(a);
}

void
chance_amqp_interrupt(struct chance_amqp *a)
{
    rmq_link_interrupt(a->link);
}

const char *
chance_amqp_peer(const struct chance_amqp *a)
{
    return rmq_link_peer(a->link);
}

size_t
chance_amqp_round_size(const struct chance_amqp *a)
{
    return a->n;
}

int
chance_amqp_publish(struct chance_amqp *a, const char *body, size_t len, const char *message_id,
                    char *err, size_t errlen)
{
    amqp_basic_properties_t p;
    memset(&p, 0, sizeof(p));
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
               AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_APP_ID_FLAG;
    p.content_type = amqp_cstring_bytes("application/json");
    p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    p.message_id = amqp_cstring_bytes(message_id);
    p.app_id = amqp_cstring_bytes("chanced");
    amqp_bytes_t b = {len, (void *)(uintptr_t)body}; /* librabbitmq's type is not const */
    /* mandatory: if the queue is gone the broker returns the message instead of dropping it */
    int st = amqp_basic_publish(a->conn, RMQ_CHANNEL, amqp_empty_bytes,
                                amqp_cstring_bytes(a->queue), 1, 0, &p, b);
    if (st != AMQP_STATUS_OK) {
        snprintf(err, errlen, "publish: %s", amqp_error_string2(st));
        return -1;
    }
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 256;
        a->state = xrealloc(a->state, a->cap);
    }
    a->state[a->n++] = PENDING;
    a->pending++;
    a->next_seq++;
    return 0;
}

/* basic.ack / basic.nack: one tag, or with multiple every tag up to it. */
static void
settle(struct chance_amqp *a, uint64_t tag, bool multiple, unsigned char to)
{
    for (size_t i = 0; i < a->n; i++) {
        uint64_t seq = a->round_first + i;
        if ((seq == tag || (multiple && seq < tag)) && a->state[i] == PENDING) {
            a->state[i] = to;
            a->pending--;
        }
    }
}

/* One frame while waiting for confirms; -1 ends the link with err filled. */
static int
on_frame(struct chance_amqp *a, const amqp_frame_t *f, char *err, size_t errlen)
{
    if (f->frame_type != AMQP_FRAME_METHOD) {
        return 0; /* content of a returned message: the return itself was noted */
    }
    switch (f->payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        const amqp_basic_ack_t *m = f->payload.method.decoded;
        settle(a, m->delivery_tag, m->multiple, ACKED);
        return 0;
    }
    case AMQP_BASIC_NACK_METHOD: {
        const amqp_basic_nack_t *m = f->payload.method.decoded;
        settle(a, m->delivery_tag, m->multiple, NACKED);
        return 0;
    }
    case AMQP_BASIC_RETURN_METHOD: {
        const amqp_basic_return_t *m = f->payload.method.decoded;
        a->returned = true;
        snprintf(err, errlen, "the broker returned a message: %u %.*s", m->reply_code,
                 (int)m->reply_text.len, (char *)m->reply_text.bytes);
        return 0;
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
        const amqp_channel_close_t *m = f->payload.method.decoded;
        snprintf(err, errlen, "broker closed the channel: %u %.*s", m->reply_code,
                 (int)m->reply_text.len, (char *)m->reply_text.bytes);
        return -1;
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
        const amqp_connection_close_t *m = f->payload.method.decoded;
        snprintf(err, errlen, "broker closed the connection: %u %.*s", m->reply_code,
                 (int)m->reply_text.len, (char *)m->reply_text.bytes);
        amqp_connection_close_ok_t ok = {0};
        (void)amqp_send_method(a->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        return -1;
    }
    default: return 0;
    }
}

int
chance_amqp_confirm(struct chance_amqp *a, int timeout_ms, bool *confirmed, char *err,
                    size_t errlen)
{
    int64_t deadline = time_mono_ms() + (a->pending > 0 ? timeout_ms : 0);
    int rc = 0;
    /* With nothing pending this still reads once: heartbeats, or a close from the broker. */
    do {
        int64_t left = deadline - time_mono_ms();
        if (left < 0) {
            left = 0;
        }
        struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};
        amqp_frame_t f;
        int st = amqp_simple_wait_frame_noblock(a->conn, &f, &tv);
        if (st == AMQP_STATUS_TIMEOUT) {
            if (a->pending > 0) {
                snprintf(err, errlen, "%zu of %zu messages not confirmed within %d ms", a->pending,
                         a->n, timeout_ms);
                rc = -1;
            }
            break;
        }
        if (st != AMQP_STATUS_OK) {
            snprintf(err, errlen, "%s", amqp_error_string2(st));
            rc = -1;
            break;
        }
        if (on_frame(a, &f, err, errlen) != 0) {
            rc = -1;
            break;
        }
    } while (a->pending > 0);
    if (rc == 0 && a->returned) {
        rc = -1; /* err already says why; the topology is redeclared on reconnect */
    }
    for (size_t i = 0; i < a->n; i++) {
        confirmed[i] = a->state[i] == ACKED && !a->returned;
    }
    if (rc == 0) {
        amqp_maybe_release_buffers(a->conn);
    }
    a->round_first = a->next_seq;
    a->n = a->pending = 0;
    a->returned = false;
    return rc;
}
