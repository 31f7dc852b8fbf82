/*
 * HTTP server (libevent's evhttp): one front thread reads and writes every connection without
 * blocking; complete requests, body included, go to a fixed pool of worker threads that call one
 * handler per request. Plus request accessors and response writers (JSON, RFC 9457
 * problem+json, chunked streams). Handlers run on the workers and may block (PostgreSQL, argon2,
 * sync RPC); a slow or idle client holds only a descriptor on the front thread, never a worker.
 *
 * The front bounds what clients can hold: a request's headers and body must arrive within
 * read_timeout_ms (also the keep-alive idle limit), open connections are capped in total and
 * per client address (an IPv6 /64 counts as one address), and the last eighth of the total is
 * kept for addresses that hold fewer than two connections.
 *
 * Ownership: server -> front thread, workers, evhttp; a struct http_req is borrowed by the
 * handler for the duration of the call; strings it returns are valid until the handler returns.
 */
#ifndef CHANCED_GATEWAY_HTTP_H
#define CHANCED_GATEWAY_HTTP_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "util.h"

struct http_server;
struct http_req;

/* Handles one request; must send exactly one response (any http_reply* or a stream). */
typedef void (*http_handler_fn)(struct http_req *req, void *arg);

struct http_options {
    const char *listen;      /* "host:port" with an IP literal host */
    int threads;             /* worker threads running handlers */
    int request_timeout_ms;  /* a write stalled this long closes; a request queued this long
                                for a worker gets 503 */
    int read_timeout_ms;     /* headers and body of one request must arrive within this */
    size_t max_header_bytes; /* request line + headers above this: 431 */
    size_t max_body_bytes;   /* bodies above this: 413 before they are buffered */
    int max_conns;           /* open connections in total */
    int max_conns_per_addr;  /* per client address (ignored with trust_forwarded: all are the
                                proxy's) */
    bool trust_forwarded;    /* client address from X-Forwarded-For */
};

/* Starts listening; NULL on failure (logged, e.g. the port is taken). */
struct http_server *http_server_new(const struct http_options *opt, http_handler_fn fn, void *arg);
/* Stops accepting, runs the requests already read, writes their replies, frees. Blocks: never
 * call from a handler. */
void http_server_free(struct http_server *srv);

const char *http_method(const struct http_req *req);
/* The path, not percent-decoded, without the query. */
const char *http_path(const struct http_req *req);
/* The raw query string after '?', or "". */
const char *http_query(const struct http_req *req);
/* A request header (case-insensitive name), or NULL. */
const char *http_header(const struct http_req *req, const char *name);
/* The client address, a canonical IP literal: the socket's, or with trust_forwarded the
 * right-most X-Forwarded-For entry when it is a valid address (clientaddr.h). */
const char *http_client_addr(const struct http_req *req);
/* The key to count the client by in rate limits: the IPv4 address, or the IPv6 /64. */
const char *http_client_bucket(const struct http_req *req);
/* The request id (X-Request-Id when well formed, else generated). */
const char *http_request_id(const struct http_req *req);
/* Copies cookie `name` into out (NUL-terminated); false if absent or longer than size-1. */
bool http_cookie(const struct http_req *req, const char *name, char *out, size_t size);

enum http_body_status {
    HTTP_BODY_OK,        /* *body holds len bytes plus a NUL */
    HTTP_BODY_TOO_LARGE, /* over max: answer 413 */
    HTTP_BODY_ERROR,     /* the client went away or stalled */
};
/* The whole body (already read by the front) in a new buffer (caller frees); too large if over
 * max. HTTP_BODY_ERROR is no longer returned: a client that stalls never reaches a handler. */
int http_read_body(struct http_req *req, size_t max, char **body, size_t *len);

/*
 * Sends a complete response. extra_headers is "Name: value\r\n..." or NULL. Security headers
 * (nosniff, no-store) and X-Request-Id are added here.
 */
void http_reply(struct http_req *req, int status, const char *content_type,
                const char *extra_headers, const char *body, size_t len);
/* Sends body (not consumed) as application/json. */
void http_reply_json(struct http_req *req, int status, const cJSON *body,
                     const char *extra_headers);
/* Sends an RFC 9457 problem: type derived from code, title from status, detail optional. */
void http_problem(struct http_req *req, int status, const char *code, const char *detail,
                  const char *extra_headers);
/* Starts a chunked response; then http_stream_write any number of times and http_stream_end.
 * http_stream_write returns once the chunk was written to the socket (-1: the client is gone),
 * so a slow reader slows the producer. A handler returning without http_stream_end closes the
 * connection: the client sees the body is incomplete. */
void http_stream_begin(struct http_req *req, int status, const char *content_type,
                       const char *extra_headers);
int http_stream_write(struct http_req *req, const char *data, size_t len) MUSTCHECK;
void http_stream_end(struct http_req *req);
/* The status sent, or 0 if nothing was sent yet. */
int http_status(const struct http_req *req);

/* The reason phrase of a status code ("Not Found"). */
const char *http_status_text(int status);

#endif
