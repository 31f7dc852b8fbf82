/* The chance relay's RabbitMQ adapter: publishing in confirm mode and reading the confirms. */
#include "rabbit.h"

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define CHANNEL 1
#define HEARTBEAT_S 30   /* the broker drops us after two missed beats */
#define FRAME_MAX 131072 /* librabbitmq's default */

enum { PENDING, ACKED, NACKED };

struct chance_amqp {
    amqp_connection_state_t conn; /* owned; owns the socket */
    char *queue;                  /* owned copies of the names */
    char *dlx;
    char *dlq;
    uint64_t next_seq;            /* confirm sequence number of the next publish (from 1) */
    uint64_t round_first;         /* sequence number of the round's first message */
    unsigned char *state;         /* per message of the round: PENDING, ACKED, NACKED */
    size_t n, cap;                /* messages in the round / allocated */
    size_t pending;               /* of them not settled yet */
    bool returned;                /* the broker returned a message of this round */
    pthread_mutex_t lock;         /* guards fd against chance_amqp_interrupt */
    int fd;                       /* socket, -1 once closed */
};

static void
reply_error(amqp_rpc_reply_t r, const char *what, char *err, size_t errlen)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        snprintf(err, errlen, "%s: ok", what);
        break;
    case AMQP_RESPONSE_NONE:
        snprintf(err, errlen, "%s: no reply from the broker", what);
        break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(err, errlen, "%s: %s", what, amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            snprintf(err, errlen, "%s: broker closed the connection: %u %.*s", what,
                     m->reply_code, (int)m->reply_text.len, (char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            snprintf(err, errlen, "%s: broker closed the channel: %u %.*s", what, m->reply_code,
                     (int)m->reply_text.len, (char *)m->reply_text.bytes);
        } else {
            snprintf(err, errlen, "%s: unexpected broker method 0x%08x", what, r.reply.id);
        }
        break;
    }
}

static int
check_rpc(struct chance_amqp *a, const char *what, char *err, size_t errlen)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(a->conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        return 0;
    }
    reply_error(r, what, err, errlen);
    return -1;
}

/* The same declarations as the logger's (roles/logger/amqp.c): both may create the queue. */
static int
declare_topology(struct chance_amqp *a, int delivery_limit, char *err, size_t errlen)
{
    amqp_exchange_declare(a->conn, CHANNEL, amqp_cstring_bytes(a->dlx),
                          amqp_cstring_bytes("fanout"), 0, 1, 0, 0, amqp_empty_table);
    if (check_rpc(a, "declare dead-letter exchange", err, errlen) != 0) {
        return -1;
    }
    amqp_queue_declare(a->conn, CHANNEL, amqp_cstring_bytes(a->dlq), 0, 1, 0, 0,
                       amqp_empty_table);
    if (check_rpc(a, "declare dead-letter queue", err, errlen) != 0) {
        return -1;
    }
    amqp_queue_bind(a->conn, CHANNEL, amqp_cstring_bytes(a->dlq), amqp_cstring_bytes(a->dlx),
                    amqp_cstring_bytes(""), amqp_empty_table);
    if (check_rpc(a, "bind dead-letter queue", err, errlen) != 0) {
        return -1;
    }
    amqp_table_entry_t args[3];
    args[0].key = amqp_cstring_bytes("x-queue-type");
    args[0].value.kind = AMQP_FIELD_KIND_UTF8;
    args[0].value.value.bytes = amqp_cstring_bytes("quorum");
    args[1].key = amqp_cstring_bytes("x-dead-letter-exchange");
    args[1].value.kind = AMQP_FIELD_KIND_UTF8;
    args[1].value.value.bytes = amqp_cstring_bytes(a->dlx);
    args[2].key = amqp_cstring_bytes("x-delivery-limit");
    args[2].value.kind = AMQP_FIELD_KIND_I64;
    args[2].value.value.i64 = delivery_limit;
    amqp_table_t table = {3, args};
    amqp_queue_declare(a->conn, CHANNEL, amqp_cstring_bytes(a->queue), 0, 1, 0, 0, table);
    return check_rpc(a, "declare queue", err, errlen);
}

static int
connect_and_login(struct chance_amqp *a, const char *url, int timeout_ms, char *err,
                  size_t errlen)
{
    struct amqp_connection_info ci;
    char *u = xstrdup(url); /* amqp_parse_url writes into its argument */
    size_t ulen = strlen(url);
    int rc = -1;
    amqp_default_connection_info(&ci);
    if (amqp_parse_url(u, &ci) != AMQP_STATUS_OK) {
        snprintf(err, errlen, "amqp_url is not a valid amqp:// URL");
        goto out;
    }
    if (ci.ssl) {
        snprintf(err, errlen, "amqps:// is not supported; use amqp:// on a trusted network");
        goto out;
    }
    amqp_socket_t *sock = amqp_tcp_socket_new(a->conn);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    int st = sock ? amqp_socket_open_noblock(sock, ci.host, ci.port, &tv) : AMQP_STATUS_NO_MEMORY;
    if (st != AMQP_STATUS_OK) {
        /* librabbitmq says only "a socket error occurred"; errno says which */
        snprintf(err, errlen, "cannot connect to %s:%d: %s", ci.host, ci.port,
                 st == AMQP_STATUS_SOCKET_ERROR && errno ? strerror(errno)
                                                         : amqp_error_string2(st));
        goto out;
    }
    pthread_mutex_lock(&a->lock);
    a->fd = amqp_socket_get_sockfd(sock);
    pthread_mutex_unlock(&a->lock);
    amqp_set_handshake_timeout(a->conn, &tv);
    amqp_set_rpc_timeout(a->conn, &tv);
    /* "amqp://host:port/" names the default vhost "/", as amqplib and pika read it. */
    const char *vhost = ci.vhost && *ci.vhost ? ci.vhost : "/";
    amqp_rpc_reply_t r = amqp_login(a->conn, vhost, 0, FRAME_MAX, HEARTBEAT_S,
                                    AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        reply_error(r, "login", err, errlen);
        goto out;
    }
    rc = 0;
out:
    util_wipe(u, ulen); /* it holds the password */
    free(u);
    return rc;
}

struct chance_amqp *
chance_amqp_open(const char *url, const char *queue, int delivery_limit, int timeout_ms,
                 char *err, size_t errlen)
{
    struct chance_amqp *a = xcalloc(1, sizeof(*a));
    pthread_mutex_init(&a->lock, NULL);
    a->fd = -1;
    a->queue = xstrdup(queue);
    a->dlx = xasprintf("%s.dlx", queue);
    a->dlq = xasprintf("%s.dlq", queue);
    a->next_seq = a->round_first = 1;
    a->conn = amqp_new_connection();
    if (a->conn == NULL) {
        snprintf(err, errlen, "out of memory creating an AMQP connection");
        goto fail;
    }
    if (connect_and_login(a, url, timeout_ms, err, errlen) != 0) {
        goto fail;
    }
    amqp_channel_open(a->conn, CHANNEL);
    if (check_rpc(a, "open channel", err, errlen) != 0 ||
        declare_topology(a, delivery_limit, err, errlen) != 0) {
        goto fail;
    }
    amqp_confirm_select(a->conn, CHANNEL);
    if (check_rpc(a, "enable publisher confirms", err, errlen) != 0) {
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
    pthread_mutex_lock(&a->lock);
    a->fd = -1;
    pthread_mutex_unlock(&a->lock);
    if (a->conn) {
        if (amqp_get_socket(a->conn) != NULL && amqp_get_sockfd(a->conn) >= 0) {
            amqp_connection_close(a->conn, AMQP_REPLY_SUCCESS);
        }
        amqp_destroy_connection(a->conn);
    }
    pthread_mutex_destroy(&a->lock);
    free(a->state);
    free(a->queue);
    free(a->dlx);
    free(a->dlq);
    free(a);
}

void
chance_amqp_interrupt(struct chance_amqp *a)
{
    pthread_mutex_lock(&a->lock);
    if (a->fd >= 0) {
        shutdown(a->fd, SHUT_RDWR);
    }
    pthread_mutex_unlock(&a->lock);
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
    int st = amqp_basic_publish(a->conn, CHANNEL, amqp_empty_bytes, amqp_cstring_bytes(a->queue),
                                1, 0, &p, b);
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
    default:
        return 0;
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
                snprintf(err, errlen, "%zu of %zu messages not confirmed within %d ms",
                         a->pending, a->n, timeout_ms);
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
