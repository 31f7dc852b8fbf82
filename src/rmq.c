/* The RabbitMQ link shared by the chance publisher and the logger consumer (rmq.h). */
#include "rmq.h"

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "rmq_conf.h"
#include "tls.h"

#define HEARTBEAT_S 30   /* the broker drops us after two missed beats */
#define FRAME_MAX 131072 /* librabbitmq's default */
#define MAX_URLS 16

struct rmq_link {
    amqp_connection_state_t conn; /* owned; owns the socket */
    pthread_mutex_t lock;         /* guards fd against rmq_link_interrupt */
    int fd;                       /* the socket, -1 once closed */
    char peer[300];               /* host:port reached */
};

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

static bool
set(const char *s)
{
    return s && *s;
}

/* A TCP or TLS socket for ci, configured from the conf's amqp_tls_* files. */
static amqp_socket_t *
new_socket(struct rmq_link *l, const struct rmq_conf *c, const struct amqp_connection_info *ci,
           char *err, size_t errlen)
{
    if (!ci->ssl) {
        amqp_socket_t *s = amqp_tcp_socket_new(l->conn);
        if (s == NULL) {
            snprintf(err, errlen, "out of memory");
        }
        return s;
    }
    amqp_socket_t *s = amqp_ssl_socket_new(l->conn);
    if (s == NULL) {
        snprintf(err, errlen, "cannot create a TLS socket");
        return NULL;
    }
    amqp_ssl_socket_set_verify_peer(s, 1);
    if (tls_is_ip(ci->host)) {
        /* librabbitmq's own name check compares DNS names only, so a broker reached by its
         * address could never verify: OpenSSL checks the address against the certificate's IP
         * entries instead, as part of verifying the chain (the context is this socket's own). */
        SSL_CTX *ctx = amqp_ssl_socket_get_context(s);
        if (ctx == NULL || X509_VERIFY_PARAM_set1_ip_asc(SSL_CTX_get0_param(ctx), ci->host) != 1) {
            snprintf(err, errlen, "cannot set up TLS verification of %s", ci->host);
            return NULL;
        }
        amqp_ssl_socket_set_verify_hostname(s, 0);
    } else {
        amqp_ssl_socket_set_verify_hostname(s, 1);
    }
    if (set(c->amqp_tls_ca) && amqp_ssl_socket_set_cacert(s, c->amqp_tls_ca) != AMQP_STATUS_OK) {
        snprintf(err, errlen, "amqp_tls_ca: cannot load %s", c->amqp_tls_ca);
        return NULL;
    }
    /* Straight into the socket's context: librabbitmq's own loader of a key given as PEM text
     * (what amqp_tls_key_file and credentials deliver) takes RSA keys only. */
    struct tls_files id = {NULL, c->amqp_tls_cert, c->amqp_tls_key};
    char why[256];
    SSL_CTX *ctx = amqp_ssl_socket_get_context(s);
    if (ctx == NULL || tls_ctx_use_identity(ctx, &id, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "amqp_tls_cert/amqp_tls_key: %s", ctx ? why : "no TLS context");
        return NULL;
    }
    return s;
}

/* Connects and logs in to one URL. */
static int
connect_one(struct rmq_link *l, const struct rmq_conf *c, const char *url, size_t urllen,
            int timeout_ms, char *err, size_t errlen)
{
    struct amqp_connection_info ci;
    char *u = xstrndup(url, urllen); /* amqp_parse_url writes into its argument */
    int rc = -1;
    amqp_default_connection_info(&ci);
    if (amqp_parse_url(u, &ci) != AMQP_STATUS_OK) {
        snprintf(err, errlen, "amqp_url holds an invalid URL");
        goto out;
    }
    snprintf(l->peer, sizeof(l->peer), "%s:%d", ci.host, ci.port);
    amqp_socket_t *sock = new_socket(l, c, &ci, err, errlen);
    if (sock == NULL) {
        goto out;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    int st = amqp_socket_open_noblock(sock, ci.host, ci.port, &tv);
    if (st != AMQP_STATUS_OK) {
        /* librabbitmq says only "a socket error occurred"; errno says which */
        snprintf(err, errlen, "cannot connect to %s: %s", l->peer,
                 st == AMQP_STATUS_SOCKET_ERROR && errno ? strerror(errno)
                                                         : amqp_error_string2(st));
        goto out;
    }
    pthread_mutex_lock(&l->lock);
    l->fd = amqp_socket_get_sockfd(sock);
    pthread_mutex_unlock(&l->lock);
    amqp_set_handshake_timeout(l->conn, &tv);
    amqp_set_rpc_timeout(l->conn, &tv);
    /* "amqp://host:port/" names the default vhost "/", as amqplib and pika read it. */
    const char *vhost = ci.vhost && *ci.vhost ? ci.vhost : "/";
    amqp_rpc_reply_t r = amqp_login(l->conn, vhost, 0, FRAME_MAX, HEARTBEAT_S,
                                    AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char why[256];
        rmq_reply_error(r, "login", why, sizeof(why));
        snprintf(err, errlen, "%s: %s", l->peer, why);
        goto out;
    }
    rc = 0;
out:
    util_wipe(u, urllen); /* it holds the password */
    free(u);
    return rc;
}

static int
declare_topology(amqp_connection_state_t conn, const char *queue, char *err, size_t errlen)
{
    char dlx[256], dlq[256];
    snprintf(dlx, sizeof(dlx), "%s.dlx", queue);
    snprintf(dlq, sizeof(dlq), "%s.dlq", queue);
    amqp_table_entry_t quorum = {
        amqp_cstring_bytes("x-queue-type"),
        {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("quorum")}};
    amqp_exchange_declare(conn, RMQ_CHANNEL, amqp_cstring_bytes(dlx), amqp_cstring_bytes("fanout"),
                          0, 1, 0, 0, amqp_empty_table);
    if (rmq_check_rpc(conn, "declare dead-letter exchange", err, errlen) != 0) {
        return -1;
    }
    amqp_queue_declare(conn, RMQ_CHANNEL, amqp_cstring_bytes(dlq), 0, 1, 0, 0,
                       (amqp_table_t){1, &quorum});
    if (rmq_check_rpc(conn, "declare dead-letter queue", err, errlen) != 0) {
        goto inequivalent;
    }
    amqp_queue_bind(conn, RMQ_CHANNEL, amqp_cstring_bytes(dlq), amqp_cstring_bytes(dlx),
                    amqp_cstring_bytes(""), amqp_empty_table);
    if (rmq_check_rpc(conn, "bind dead-letter queue", err, errlen) != 0) {
        return -1;
    }
    amqp_table_entry_t args[2] = {
        quorum,
        {amqp_cstring_bytes("x-dead-letter-exchange"),
         {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes(dlx)}}};
    amqp_queue_declare(conn, RMQ_CHANNEL, amqp_cstring_bytes(queue), 0, 1, 0, 0,
                       (amqp_table_t){2, args});
    if (rmq_check_rpc(conn, "declare queue", err, errlen) != 0) {
        goto inequivalent;
    }
    return 0;
inequivalent:
    if (strstr(err, "406") || strstr(err, "PRECONDITION_FAILED")) {
        /* Declared earlier with other arguments (an older chanced had x-delivery-limit and a
         * classic dead-letter queue): say how to get out of it. */
        size_t n = strlen(err);
        snprintf(err + n, errlen - n,
                 " (the queue exists with other arguments: let the logger drain it, then "
                 "delete %s and %s, or set amqp_queue to a new name)",
                 queue, dlq);
    }
    return -1;
}

/* The reply code of the channel close that answered the last RPC, or 0. */
static int
channel_close_code(amqp_connection_state_t conn)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        return ((amqp_channel_close_t *)r.reply.decoded)->reply_code;
    }
    return 0;
}

static int
setup_topology(amqp_connection_state_t conn, const char *queue, enum rmq_topology topology,
               char *err, size_t errlen)
{
    if (declare_topology(conn, queue, err, errlen) == 0) {
        return 0;
    }
    if (topology != RMQ_TOPOLOGY_DECLARE_OR_CHECK ||
        channel_close_code(conn) != AMQP_ACCESS_REFUSED) {
        return -1;
    }
    /* This user may not declare: acknowledge the closed channel, open it again and check that
     * the queue exists (a passive declare needs no permission). */
    char why[256];
    amqp_channel_close_ok_t ok = {0};
    if (amqp_send_method(conn, RMQ_CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK) {
        return -1;
    }
    amqp_channel_open(conn, RMQ_CHANNEL);
    if (rmq_check_rpc(conn, "open channel", err, errlen) != 0) {
        return -1;
    }
    amqp_queue_declare(conn, RMQ_CHANNEL, amqp_cstring_bytes(queue), 1, 0, 0, 0, amqp_empty_table);
    if (rmq_check_rpc(conn, "check queue", why, sizeof(why)) != 0) {
        snprintf(err, errlen,
                 "%s (this user may not declare the queue: the logger, or the broker's "
                 "definitions, must declare it first)",
                 why);
        return -1;
    }
    return 0;
}

struct rmq_link *
rmq_link_open(const struct rmq_conf *c, enum rmq_topology topology, int timeout_ms, unsigned *next,
              char *err, size_t errlen)
{
    const char *urls[MAX_URLS];
    size_t lens[MAX_URLS], n = 0;
    for (const char *p = c->amqp_url; *p && n < MAX_URLS;) {
        while (*p == ' ' || *p == ',') {
            p++;
        }
        size_t len = strcspn(p, ",");
        while (len > 0 && p[len - 1] == ' ') {
            len--;
        }
        if (len > 0) {
            urls[n] = p;
            lens[n++] = len;
        }
        p += strcspn(p, ",");
    }
    if (n == 0) {
        snprintf(err, errlen, "amqp_url is empty");
        return NULL;
    }
    for (size_t tried = 0; tried < n; tried++) {
        unsigned i = (*next + (unsigned)tried) % (unsigned)n;
        struct rmq_link *l = xcalloc(1, sizeof(*l));
        pthread_mutex_init(&l->lock, NULL);
        l->fd = -1;
        l->conn = amqp_new_connection();
        if (l->conn && connect_one(l, c, urls[i], lens[i], timeout_ms, err, errlen) == 0) {
            amqp_channel_open(l->conn, RMQ_CHANNEL);
            if (rmq_check_rpc(l->conn, "open channel", err, errlen) == 0 &&
                setup_topology(l->conn, c->amqp_queue, topology, err, errlen) == 0) {
                *next = i;
                return l;
            }
        }
        rmq_link_close(l);
    }
    return NULL;
}

void
rmq_link_close(struct rmq_link *l)
{
    if (l == NULL) {
        return;
    }
    pthread_mutex_lock(&l->lock);
    l->fd = -1;
    pthread_mutex_unlock(&l->lock);
    if (l->conn) {
        /* A polite close when the link still works; destroy frees everything regardless. */
        if (amqp_get_socket(l->conn) != NULL && amqp_get_sockfd(l->conn) >= 0) {
            amqp_connection_close(l->conn, AMQP_REPLY_SUCCESS);
        }
        amqp_destroy_connection(l->conn);
    }
    pthread_mutex_destroy(&l->lock);
    free(l);
}

void
rmq_link_interrupt(struct rmq_link *l)
{
    pthread_mutex_lock(&l->lock);
    if (l->fd >= 0) {
        shutdown(l->fd, SHUT_RDWR);
    }
    pthread_mutex_unlock(&l->lock);
}

amqp_connection_state_t
rmq_link_conn(struct rmq_link *l)
{
    return l->conn;
}

const char *
rmq_link_peer(const struct rmq_link *l)
{
    return l->peer;
}
