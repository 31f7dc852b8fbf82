/* The chance relay's RabbitMQ adapter: publishing in confirm mode and reading the confirms. */
#include "rabbit.h"

#include <amqp.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rmq.h"
#include "rmq_conf.h"

enum { PENDING, ACKED, NACKED };

/*
 * The window: every message published and not yet reported by chance_amqp_settled, in publish
 * order. state[off] has the confirm sequence number first_seq, state[off + i] first_seq + i.
 */
struct chance_amqp {
    struct rmq_link *link;        /* owned */
    amqp_connection_state_t conn; /* borrowed from link */
    char *queue;                  /* owned copy of the name */
    uint64_t first_seq;           /* sequence number of state[off] (the first publish is 1) */
    unsigned char *state;         /* per message of the window: PENDING, ACKED, NACKED */
    int64_t *sent_ms;             /* per message: when it was published (monotonic) */
    size_t off, n, cap;           /* the window is [off, n) of cap allocated */
    bool returned;                /* the broker returned a message: the link is spent */
};

struct chance_amqp *
chance_amqp_open(const struct rmq_conf *rmq, int timeout_ms, unsigned *next_url, char *err,
                 size_t errlen)
{
    struct chance_amqp *a = xcalloc(1, sizeof(*a));
    a->queue = xstrdup(rmq->amqp_queue);
    a->first_seq = 1;
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
    free(a->sent_ms);
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
chance_amqp_unsettled(const struct chance_amqp *a, int64_t *oldest_ms)
{
    if (oldest_ms) {
        *oldest_ms = a->n > a->off ? a->sent_ms[a->off] : 0;
    }
    return a->n - a->off;
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
    if (a->n == a->cap && a->off > 0) { /* slide the window back to the start */
        memmove(a->state, a->state + a->off, a->n - a->off);
        memmove(a->sent_ms, a->sent_ms + a->off, (a->n - a->off) * sizeof(*a->sent_ms));
        a->n -= a->off;
        a->off = 0;
    }
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 256;
        a->state = xrealloc(a->state, a->cap);
        a->sent_ms = xrealloc(a->sent_ms, a->cap * sizeof(*a->sent_ms));
    }
    a->sent_ms[a->n] = time_mono_ms();
    a->state[a->n++] = PENDING;
    return 0;
}

/* basic.ack / basic.nack: one tag, or with multiple every tag up to it. */
static void
settle(struct chance_amqp *a, uint64_t tag, bool multiple, unsigned char to)
{
    if (tag < a->first_seq || tag - a->first_seq >= a->n - a->off) {
        return; /* reported already (a repeated multiple ack), or not ours */
    }
    size_t last = a->off + (size_t)(tag - a->first_seq);
    for (size_t i = multiple ? a->off : last; i <= last; i++) {
        if (a->state[i] == PENDING) {
            a->state[i] = to;
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
chance_amqp_wait(struct chance_amqp *a, int timeout_ms, int wake_fd, char *err, size_t errlen)
{
    /* librabbitmq may hold bytes or frames it read already: the socket would not show them. */
    if (timeout_ms > 0 && !amqp_data_in_buffer(a->conn) && !amqp_frames_enqueued(a->conn)) {
        struct pollfd fds[2] = {{.fd = amqp_get_sockfd(a->conn), .events = POLLIN},
                                {.fd = wake_fd, .events = POLLIN}};
        if (poll(fds, wake_fd >= 0 ? 2 : 1, timeout_ms) < 0 && errno != EINTR) {
            snprintf(err, errlen, "poll: %s", strerror(errno));
            return -1;
        }
    }
    /* Everything already there, without blocking; this also services heartbeats and notices a
     * close from the broker. */
    for (;;) {
        struct timeval tv = {0, 0};
        amqp_frame_t f;
        int st = amqp_simple_wait_frame_noblock(a->conn, &f, &tv);
        if (st == AMQP_STATUS_TIMEOUT) {
            break;
        }
        if (st != AMQP_STATUS_OK) {
            snprintf(err, errlen, "%s", amqp_error_string2(st));
            return -1;
        }
        if (on_frame(a, &f, err, errlen) != 0) {
            return -1;
        }
    }
    if (a->returned) {
        return -1; /* err already says why; the topology is redeclared on reconnect */
    }
    amqp_maybe_release_buffers(a->conn);
    return 0;
}

size_t
chance_amqp_settled(struct chance_amqp *a, bool *confirmed, size_t max)
{
    size_t k = 0;
    while (k < max && a->off < a->n && a->state[a->off] != PENDING) {
        confirmed[k++] = a->state[a->off] == ACKED;
        a->off++;
        a->first_seq++;
    }
    if (a->off == a->n) {
        a->off = a->n = 0;
    }
    return k;
}
