/* RabbitMQ connect, error text and topology shared by the chance relay and the logger. */
#include "rmq.h"

#include <amqp_tcp_socket.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define HEARTBEAT_S 30   /* the broker drops us after two missed beats */
#define FRAME_MAX 131072 /* librabbitmq's default */

void
rmq_reply_error(amqp_rpc_reply_t r, const char *what, char *err, size_t errlen)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL: snprintf(err, errlen, "%s: ok", what); break;
    case AMQP_RESPONSE_NONE: snprintf(err, errlen, "%s: no reply from the broker", what); break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(err, errlen, "%s: %s", what, amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            snprintf(err, errlen, "%s: broker closed the connection: %u %.*s", what, m->reply_code,
                     (int)m->reply_text.len, (char *)m->reply_text.bytes);
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

int
rmq_check_rpc(amqp_connection_state_t conn, const char *what, char *err, size_t errlen)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        return 0;
    }
    rmq_reply_error(r, what, err, errlen);
    return -1;
}

int
rmq_connect(amqp_connection_state_t conn, const char *url, int timeout_ms,
            void (*on_socket)(int fd, void *arg), void *arg, char *err, size_t errlen)
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
    amqp_socket_t *sock = amqp_tcp_socket_new(conn);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    int st = sock ? amqp_socket_open_noblock(sock, ci.host, ci.port, &tv) : AMQP_STATUS_NO_MEMORY;
    if (st != AMQP_STATUS_OK) {
        /* librabbitmq says only "a socket error occurred"; errno says which */
        snprintf(err, errlen, "cannot connect to %s:%d: %s", ci.host, ci.port,
                 st == AMQP_STATUS_SOCKET_ERROR && errno ? strerror(errno)
                                                         : amqp_error_string2(st));
        goto out;
    }
    if (on_socket) {
        on_socket(amqp_socket_get_sockfd(sock), arg);
    }
    amqp_set_handshake_timeout(conn, &tv);
    amqp_set_rpc_timeout(conn, &tv);
    /* "amqp://host:port/" names the default vhost "/", as amqplib and pika read it. */
    const char *vhost = ci.vhost && *ci.vhost ? ci.vhost : "/";
    amqp_rpc_reply_t r = amqp_login(conn, vhost, 0, FRAME_MAX, HEARTBEAT_S, AMQP_SASL_METHOD_PLAIN,
                                    ci.user, ci.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        rmq_reply_error(r, "login", err, errlen);
        goto out;
    }
    rc = 0;
out:
    util_wipe(u, ulen); /* it holds the password */
    free(u);
    return rc;
}

int
rmq_declare_topology(amqp_connection_state_t conn, amqp_channel_t channel, const char *queue,
                     int delivery_limit, char *err, size_t errlen)
{
    char dlx[256], dlq[256];
    snprintf(dlx, sizeof(dlx), "%s.dlx", queue);
    snprintf(dlq, sizeof(dlq), "%s.dlq", queue);
    amqp_exchange_declare(conn, channel, amqp_cstring_bytes(dlx), amqp_cstring_bytes("fanout"), 0,
                          1, 0, 0, amqp_empty_table);
    if (rmq_check_rpc(conn, "declare dead-letter exchange", err, errlen) != 0) {
        return -1;
    }
    amqp_queue_declare(conn, channel, amqp_cstring_bytes(dlq), 0, 1, 0, 0, amqp_empty_table);
    if (rmq_check_rpc(conn, "declare dead-letter queue", err, errlen) != 0) {
        return -1;
    }
    amqp_queue_bind(conn, channel, amqp_cstring_bytes(dlq), amqp_cstring_bytes(dlx),
                    amqp_cstring_bytes(""), amqp_empty_table);
    if (rmq_check_rpc(conn, "bind dead-letter queue", err, errlen) != 0) {
        return -1;
    }
    /* x-delivery-limit needs a quorum queue. */
    amqp_table_entry_t args[3];
    args[0].key = amqp_cstring_bytes("x-queue-type");
    args[0].value.kind = AMQP_FIELD_KIND_UTF8;
    args[0].value.value.bytes = amqp_cstring_bytes("quorum");
    args[1].key = amqp_cstring_bytes("x-dead-letter-exchange");
    args[1].value.kind = AMQP_FIELD_KIND_UTF8;
    args[1].value.value.bytes = amqp_cstring_bytes(dlx);
    args[2].key = amqp_cstring_bytes("x-delivery-limit");
    args[2].value.kind = AMQP_FIELD_KIND_I64;
    args[2].value.value.i64 = delivery_limit;
    amqp_table_t table = {3, args};
    amqp_queue_declare(conn, channel, amqp_cstring_bytes(queue), 0, 1, 0, 0, table);
    return rmq_check_rpc(conn, "declare queue", err, errlen);
}
