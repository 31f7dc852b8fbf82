/* civetweb adapter: one catch-all begin_request callback, request accessors, response writers. */
#include "http.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

struct http_server {
    struct mg_context *mg; /* civetweb context, owned */
    char *host;            /* listen host, owned (to wake the acceptor when stopping) */
    int port;              /* listen port */
    int stopped;           /* atomic: mg_stop returned */
    http_handler_fn fn;    /* the application's handler */
    void *arg;             /* its argument */
    bool trust_forwarded;  /* X-Forwarded-For gives the client address */
};

struct http_req {
    struct mg_connection *mc;         /* borrowed from civetweb */
    const struct mg_request_info *ri; /* borrowed from civetweb */
    struct http_server *srv;          /* borrowed */
    int status;                       /* status sent, 0 before */
    bool streaming;                   /* a chunked response is open */
    char client[64];                  /* client address */
    char rid[40];                     /* request id */
};

static int on_begin_request(struct mg_connection *mc);
static int on_log_message(const struct mg_connection *mc, const char *message);

static bool
valid_rid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_') ||
            n >= 36) {
            return false;
        }
    }
    return n > 0;
}

struct http_server *
http_server_new(const struct http_options *opt, http_handler_fn fn, void *arg)
{
    struct http_server *srv = xcalloc(1, sizeof(*srv));
    srv->fn = fn;
    srv->arg = arg;
    srv->trust_forwarded = opt->trust_forwarded;
    if (util_parse_hostport(opt->listen, &srv->host, &srv->port) != 0) {
        log_error("http_listen_failed", "addr=%s reason=\"not host:port\"", opt->listen);
        free(srv);
        return NULL;
    }
    char threads[16], timeout[16];
    snprintf(threads, sizeof(threads), "%d", opt->threads);
    snprintf(timeout, sizeof(timeout), "%d", opt->request_timeout_ms);
    /* No document_root: civetweb serves no files; every request reaches on_begin_request. */
    const char *options[] = {
        "listening_ports",
        opt->listen,
        "num_threads",
        threads,
        "request_timeout_ms",
        timeout,
        "enable_keep_alive",
        "yes",
        "keep_alive_timeout_ms",
        "5000",
        "tcp_nodelay",
        "1",
        "decode_url",
        "no",
        NULL,
    };
    struct mg_callbacks cb = {0};
    cb.begin_request = on_begin_request;
    cb.log_message = on_log_message;
    mg_init_library(0);
    srv->mg = mg_start(&cb, srv, options);
    if (srv->mg == NULL) {
        log_error("http_listen_failed", "addr=%s", opt->listen);
        free(srv->host);
        free(srv);
        return NULL;
    }
    log_info("http_listening", "addr=%s threads=%d", opt->listen, opt->threads);
    return srv;
}

static void *
stop_thread(void *arg)
{
    struct http_server *srv = arg;
    mg_stop(srv->mg);
    __atomic_store_n(&srv->stopped, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Connects and hangs up at once: wakes civetweb's acceptor, which otherwise notices a stop
 * only when its 2-second poll times out. */
static void
poke(const struct http_server *srv)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, srv->host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)srv->port);
        len = sizeof(*in4);
    } else if (inet_pton(AF_INET6, srv->host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)srv->port);
        len = sizeof(*in6);
    } else {
        return;
    }
    if (strcmp(srv->host, "0.0.0.0") == 0) {
        in4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        (void)connect(fd, (struct sockaddr *)&ss, len);
        close(fd);
    }
}

void
http_server_free(struct http_server *srv)
{
    if (srv == NULL) {
        return;
    }
    pthread_t t;
    if (pthread_create(&t, NULL, stop_thread, srv) != 0) {
        mg_stop(srv->mg);
    } else {
        while (!__atomic_load_n(&srv->stopped, __ATOMIC_ACQUIRE)) {
            poke(srv);
            usleep(20000);
        }
        pthread_join(t, NULL);
    }
    free(srv->host);
    free(srv);
}

static int
on_log_message(const struct mg_connection *mc, const char *message)
{
    UNUSED(mc);
    log_warn("http_server_message", "message=\"%.200s\"", message);
    return 1;
}

static void
set_client_addr(struct http_req *req)
{
    snprintf(req->client, sizeof(req->client), "%s", req->ri->remote_addr);
    const char *xff = req->srv->trust_forwarded ? mg_get_header(req->mc, "X-Forwarded-For") : NULL;
    if (xff == NULL) {
        return;
    }
    /* The last hop was added by our proxy; earlier ones are the client's word. */
    const char *last = strrchr(xff, ',');
    last = last ? last + 1 : xff;
    while (*last == ' ') {
        last++;
    }
    size_t n = strcspn(last, " ");
    if (n > 0 && n < sizeof(req->client)) {
        memcpy(req->client, last, n);
        req->client[n] = '\0';
    }
}

static int
on_begin_request(struct mg_connection *mc)
{
    struct http_server *srv = mg_get_user_data(mg_get_context(mc));
    struct http_req req = {.mc = mc, .ri = mg_get_request_info(mc), .srv = srv};
    set_client_addr(&req);
    const char *rid = mg_get_header(mc, "X-Request-Id");
    if (rid && valid_rid(rid)) {
        snprintf(req.rid, sizeof(req.rid), "%s", rid);
    } else {
        util_random_hex(req.rid, 16);
    }
    log_set_request_id(req.rid);
    srv->fn(&req, srv->arg);
    if (req.status == 0) {
        http_problem(&req, 500, "internal", "the handler sent no response", NULL);
    }
    log_set_request_id(NULL);
    return req.status;
}

const char *
http_method(const struct http_req *req)
{
    return req->ri->request_method;
}

const char *
http_path(const struct http_req *req)
{
    return req->ri->local_uri ? req->ri->local_uri : "/";
}

const char *
http_query(const struct http_req *req)
{
    return req->ri->query_string ? req->ri->query_string : "";
}

const char *
http_header(const struct http_req *req, const char *name)
{
    return mg_get_header(req->mc, name);
}

const char *
http_client_addr(const struct http_req *req)
{
    return req->client;
}

const char *
http_request_id(const struct http_req *req)
{
    return req->rid;
}

bool
http_cookie(const struct http_req *req, const char *name, char *out, size_t size)
{
    const char *h = mg_get_header(req->mc, "Cookie");
    size_t nlen = strlen(name);
    while (h && *h) {
        while (*h == ' ' || *h == ';') {
            h++;
        }
        size_t n = strcspn(h, ";");
        if (n > nlen && strncmp(h, name, nlen) == 0 && h[nlen] == '=') {
            size_t vlen = n - nlen - 1;
            if (vlen >= size) {
                return false;
            }
            memcpy(out, h + nlen + 1, vlen);
            out[vlen] = '\0';
            return true;
        }
        h += n;
    }
    return false;
}

int
http_read_body(struct http_req *req, size_t max, char **body, size_t *len)
{
    long long declared = req->ri->content_length;
    if (declared > (long long)max) {
        return HTTP_BODY_TOO_LARGE;
    }
    struct sbuf b = {0};
    char chunk[16384];
    for (;;) {
        int n = mg_read(req->mc, chunk, sizeof(chunk));
        if (n < 0) {
            sbuf_cleanup(&b);
            return HTTP_BODY_ERROR;
        }
        if (n == 0) {
            break;
        }
        if (b.len + (size_t)n > max) {
            sbuf_cleanup(&b);
            return HTTP_BODY_TOO_LARGE;
        }
        sbuf_append(&b, chunk, (size_t)n);
    }
    if (declared >= 0 && (long long)b.len != declared) {
        sbuf_cleanup(&b);
        return HTTP_BODY_ERROR;
    }
    *len = b.len;
    *body = sbuf_steal(&b);
    return HTTP_BODY_OK;
}

const char *
http_status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

/* True if a "Name: value\r\n..." block has a header called name (case-insensitive). */
static bool
has_header(const char *block, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = block; p && *p;) {
        if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
            return true;
        }
        p = strstr(p, "\r\n");
        p = p ? p + 2 : NULL;
    }
    return false;
}

/*
 * The status line and our headers. extra may bring its own Cache-Control and
 * Content-Security-Policy (the web app's pages and files do): then ours are left out, since a
 * browser obeys every CSP header it gets and default-src 'none' would block the page.
 */
static void
append_head(struct sbuf *b, const struct http_req *req, int status, const char *content_type,
            const char *extra)
{
    sbuf_appendf(b, "HTTP/1.1 %d %s\r\n", status, http_status_text(status));
    if (status != 304) {
        sbuf_appendf(b, "Content-Type: %s\r\n", content_type);
    }
    if (extra == NULL || !has_header(extra, "Cache-Control")) {
        sbuf_appends(b, "Cache-Control: no-store\r\n");
    }
    if (extra == NULL || !has_header(extra, "Content-Security-Policy")) {
        sbuf_appends(b, "Content-Security-Policy: default-src 'none'; frame-ancestors 'none'\r\n");
    }
    sbuf_appendf(b, "X-Content-Type-Options: nosniff\r\nX-Request-Id: %s\r\n%s", req->rid,
                 extra ? extra : "");
}

void
http_reply(struct http_req *req, int status, const char *content_type, const char *extra_headers,
           const char *body, size_t len)
{
    if (req->status != 0) {
        log_error("http_double_reply", "status=%d first=%d", status, req->status);
        return;
    }
    struct sbuf b = {0};
    append_head(&b, req, status, content_type, extra_headers);
    if (status == 204 || status == 304) {
        /* no body, and no Content-Length (RFC 9110: a 304's would describe the 200's body) */
        sbuf_appends(&b, "\r\n");
        len = 0;
    } else {
        sbuf_appendf(&b, "Content-Length: %zu\r\n\r\n", len);
    }
    sbuf_append(&b, body, len);
    /* One write: with TCP_NODELAY, head and body in separate writes cost a packet each. */
    mg_write(req->mc, b.data, b.len);
    sbuf_cleanup(&b);
    req->status = status;
}

void
http_reply_json(struct http_req *req, int status, const cJSON *body, const char *extra_headers)
{
    char *text = cJSON_PrintUnformatted(body);
    if (text == NULL) {
        http_problem(req, 500, "internal", "response could not be encoded", NULL);
        return;
    }
    http_reply(req, status, "application/json", extra_headers, text, strlen(text));
    free(text);
}

void
http_problem(struct http_req *req, int status, const char *code, const char *detail,
             const char *extra_headers)
{
    cJSON *p = cJSON_CreateObject();
    char type[96];
    snprintf(type, sizeof(type), "urn:chanced:problem:%s", code);
    cJSON_AddStringToObject(p, "type", type);
    cJSON_AddStringToObject(p, "title", http_status_text(status));
    cJSON_AddNumberToObject(p, "status", status);
    cJSON_AddStringToObject(p, "code", code);
    if (detail) {
        cJSON_AddStringToObject(p, "detail", detail);
    }
    cJSON_AddStringToObject(p, "instance", http_path(req));
    cJSON_AddStringToObject(p, "request_id", req->rid);
    char *text = cJSON_PrintUnformatted(p);
    cJSON_Delete(p);
    http_reply(req, status, "application/problem+json", extra_headers, text, strlen(text));
    free(text);
}

void
http_stream_begin(struct http_req *req, int status, const char *content_type,
                  const char *extra_headers)
{
    struct sbuf b = {0};
    append_head(&b, req, status, content_type, extra_headers);
    sbuf_appends(&b, "Transfer-Encoding: chunked\r\n\r\n");
    mg_write(req->mc, b.data, b.len);
    sbuf_cleanup(&b);
    req->status = status;
    req->streaming = true;
}

int
http_stream_write(struct http_req *req, const char *data, size_t len)
{
    if (len == 0) {
        return 0; /* an empty chunk would end the stream */
    }
    return mg_send_chunk(req->mc, data, (unsigned)len) > 0 ? 0 : -1;
}

void
http_stream_end(struct http_req *req)
{
    if (req->streaming) {
        mg_write(req->mc, "0\r\n\r\n", 5);
        req->streaming = false;
    }
}

int
http_status(const struct http_req *req)
{
    return req->status;
}
