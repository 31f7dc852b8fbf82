/* The logger's RabbitMQ adapter: librabbitmq calls, delivery assembly and error translation. */
#include "rabbit.h"

#include <amqp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "rmq.h"
#include "rmq_conf.h"

enum rx_state {
    RX_IDLE,   /* waiting for basic.deliver */
    RX_HEADER, /* deliver seen, content header next */
    RX_BODY,   /* collecting body frames */
};

struct logger_amqp {
    struct rmq_link *link;        /* owned */
    amqp_connection_state_t conn; /* borrowed from link */
    char *queue;                  /* owned copy of the name */
    char *tag;                    /* consumer tag while consuming, else NULL */
    size_t max_body;              /* bodies above this are skipped, not buffered */
    enum rx_state rx;             /* where a delivery in progress stands */
    struct logger_amqp_msg cur;   /* the delivery being assembled */
    size_t got;                   /* body bytes seen so far */
};

struct logger_amqp *
logger_amqp_open(const struct logger_amqp_opts *o, char *err, size_t errlen)
{
    struct logger_amqp *a = xcalloc(1, sizeof(*a));
    a->queue = xstrdup(o->rmq->amqp_queue);
    a->max_body = o->max_body;
    if ((a->link = rmq_link_open(o->rmq, RMQ_TOPOLOGY_DECLARE, o->timeout_ms, o->next_url, err,
                                 errlen)) == NULL) {
        goto fail;
    }
    a->conn = rmq_link_conn(a->link);
    amqp_basic_qos(a->conn, RMQ_CHANNEL, 0, (uint16_t)o->prefetch, 0);
    if (rmq_check_rpc(a->conn, "set prefetch", err, errlen) != 0) {
        goto fail;
    }
    return a;
fail:
    logger_amqp_close(a);
    return NULL;
}

void
logger_amqp_close(struct logger_amqp *a)
{
    if (a == NULL) {
        return;
    }
    rmq_link_close(a->link);
    logger_amqp_msg_cleanup(&a->cur);
    free(a->tag);
    free(a->queue);
    free(a);
}

void
logger_amqp_interrupt(struct logger_amqp *a)
{
    rmq_link_interrupt(a->link);
}

int
logger_amqp_consume(struct logger_amqp *a, char *err, size_t errlen)
{
    amqp_basic_consume_ok_t *ok =
        amqp_basic_consume(a->conn, RMQ_CHANNEL, amqp_cstring_bytes(a->queue), amqp_empty_bytes, 0,
                           0, 0, amqp_empty_table);
    if (ok == NULL) {
        if (rmq_check_rpc(a->conn, "start consuming", err, errlen) == 0) {
            snprintf(err, errlen, "start consuming: no consume-ok");
        }
        return -1;
    }
    free(a->tag);
    a->tag = xstrndup(ok->consumer_tag.bytes, ok->consumer_tag.len);
    return 0;
}

int
logger_amqp_cancel(struct logger_amqp *a, char *err, size_t errlen)
{
    if (a->tag == NULL) {
        return 0;
    }
    /* Deliveries that arrive before cancel-ok are queued by librabbitmq for logger_amqp_next. */
    amqp_basic_cancel(a->conn, RMQ_CHANNEL, amqp_cstring_bytes(a->tag));
    free(a->tag);
    a->tag = NULL;
    return rmq_check_rpc(a->conn, "cancel consumer", err, errlen);
}

void
logger_amqp_msg_cleanup(struct logger_amqp_msg *msg)
{
    free(msg->body);
    memset(msg, 0, sizeof(*msg));
}

/* A method frame on our channel or the connection; -1 ends the link with err filled. */
static int
on_method(struct logger_amqp *a, const amqp_frame_t *f, char *err, size_t errlen)
{
    switch (f->payload.method.id) {
    case AMQP_BASIC_DELIVER_METHOD: {
        const amqp_basic_deliver_t *d = f->payload.method.decoded;
        logger_amqp_msg_cleanup(&a->cur);
        a->cur.tag = d->delivery_tag;
        a->cur.redelivered = d->redelivered;
        a->rx = RX_HEADER;
        return 0;
    }
    case AMQP_BASIC_CANCEL_METHOD:
        snprintf(err, errlen, "the broker cancelled our consumer (queue deleted?)");
        return -1;
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
    default: return 0; /* replies to our own calls that came late: nothing to do */
    }
}

/* Content frames of the delivery in progress; 1 when it is complete. */
static int
on_content(struct logger_amqp *a, const amqp_frame_t *f, char *err, size_t errlen)
{
    if (f->frame_type == AMQP_FRAME_HEADER) {
        if (a->rx != RX_HEADER) {
            snprintf(err, errlen, "content header without a delivery");
            return -1;
        }
        uint64_t size = f->payload.properties.body_size;
        a->cur.len = (size_t)size;
        a->got = 0;
        if (size > a->max_body) {
            a->cur.oversize = true; /* count the bytes, keep none */
        } else {
            a->cur.body = xmalloc((size_t)size + 1);
            a->cur.body[size] = '\0';
        }
        a->rx = RX_BODY;
    } else {
        size_t n = f->payload.body_fragment.len;
        if (a->rx != RX_BODY || a->got + n > a->cur.len) {
            snprintf(err, errlen, "unexpected body frame");
            return -1;
        }
        if (a->cur.body) {
            memcpy(a->cur.body + a->got, f->payload.body_fragment.bytes, n);
        }
        a->got += n;
    }
    return a->rx == RX_BODY && a->got == a->cur.len ? 1 : 0;
}

int
logger_amqp_next(struct logger_amqp *a, int timeout_ms, struct logger_amqp_msg *msg, char *err,
                 size_t errlen)
{
    int64_t deadline = time_mono_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - time_mono_ms();
        if (left < 0) {
            left = 0;
        }
        struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};
        amqp_frame_t f;
        int st = amqp_simple_wait_frame_noblock(a->conn, &f, &tv);
        if (st == AMQP_STATUS_TIMEOUT) {
            return 0;
        }
        if (st != AMQP_STATUS_OK) {
            snprintf(err, errlen, "%s", amqp_error_string2(st));
            return -1;
        }
        int rc = 0;
        if (f.frame_type == AMQP_FRAME_METHOD) {
            rc = on_method(a, &f, err, errlen);
        } else if (f.frame_type == AMQP_FRAME_HEADER || f.frame_type == AMQP_FRAME_BODY) {
            rc = on_content(a, &f, err, errlen);
        }
        if (rc < 0) {
            return -1;
        }
        if (rc == 1) {
            *msg = a->cur;
            memset(&a->cur, 0, sizeof(a->cur));
            a->rx = RX_IDLE;
            amqp_maybe_release_buffers(a->conn);
            return 1;
        }
    }
}

int
logger_amqp_ack(struct logger_amqp *a, uint64_t tag, bool multiple)
{
    return amqp_basic_ack(a->conn, RMQ_CHANNEL, tag, multiple) == AMQP_STATUS_OK ? 0 : -1;
}

int
logger_amqp_reject(struct logger_amqp *a, uint64_t tag)
{
    return amqp_basic_reject(a->conn, RMQ_CHANNEL, tag, 0) == AMQP_STATUS_OK ? 0 : -1;
}
