/* /livez, /readyz and /metrics over libevent's evhttp. */
#include "health.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "util.h"

#define HEALTH_MAX_HEADER_BYTES 8192 /* request line and headers */
#define HEALTH_MAX_BODY_BYTES 1024

struct health {
    struct evhttp *http;     /* owned */
    struct metrics *metrics; /* borrowed */
    health_ready_fn ready;   /* borrowed callback */
    void *arg;
};

static void
reply(struct evhttp_request *req, int code, const char *type, const char *body)
{
    struct evbuffer *buf = evbuffer_new();
    evbuffer_add(buf, body, strlen(body));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
    evhttp_send_reply(req, code,
                      code == 200   ? "OK"
                      : code == 503 ? "Service Unavailable"
                                    : "Not Found",
                      buf);
    evbuffer_free(buf);
}

static void
on_request(struct evhttp_request *req, void *arg)
{
    struct health *h = arg;
    const char *uri = evhttp_request_get_uri(req);
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        reply(req, 404, "text/plain", "not found\n");
        return;
    }
    if (strcmp(uri, "/livez") == 0) {
        reply(req, 200, "application/json", "{\"status\":\"ok\"}\n");
    } else if (strcmp(uri, "/readyz") == 0) {
        char why[200] = "";
        if (h->ready(h->arg, why, sizeof(why))) {
            reply(req, 200, "application/json", "{\"status\":\"ready\"}\n");
        } else {
            char *body = xasprintf("{\"status\":\"unavailable\",\"reason\":\"%s\"}\n", why);
            reply(req, 503, "application/json", body);
            free(body);
        }
    } else if (strcmp(uri, "/metrics") == 0) {
        char *text = metrics_render(h->metrics);
        reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", text);
        free(text);
    } else {
        reply(req, 404, "text/plain", "not found\n");
    }
}

struct health *
health_new(struct loop *loop, const char *listen, struct metrics *metrics, health_ready_fn ready,
           void *arg, char *err, size_t errlen)
{
    char *host;
    int port;
    if (util_parse_hostport(listen, &host, &port) != 0) {
        snprintf(err, errlen, "cannot parse health address %s", listen);
        return NULL;
    }
    struct health *h = xcalloc(1, sizeof(*h));
    h->metrics = metrics;
    h->ready = ready;
    h->arg = arg;
    h->http = evhttp_new(loop_base(loop));
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_timeout(h->http, 10);
    /* Probes and scrapes are small GETs: refuse anything bigger before buffering it. */
    evhttp_set_max_headers_size(h->http, HEALTH_MAX_HEADER_BYTES);
    evhttp_set_max_body_size(h->http, HEALTH_MAX_BODY_BYTES);
    evhttp_set_gencb(h->http, on_request, h);
    if (evhttp_bind_socket(h->http, host, (ev_uint16_t)port) != 0) {
        snprintf(err, errlen, "cannot listen on %s for health checks", listen);
        evhttp_free(h->http);
        free(h);
        free(host);
        return NULL;
    }
    free(host);
    log_info("health_listening", "addr=%s", listen);
    return h;
}

void
health_free(struct health *h)
{
    if (h == NULL) {
        return;
    }
    evhttp_free(h->http);
    free(h);
}
