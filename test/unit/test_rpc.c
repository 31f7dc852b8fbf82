/*
 * In-process loopback tests of rpc_server and rpc_client on one loop: replies, errors, streams,
 * Nest's reply shapes (replaying the frames in test/data/nest_frames.txt over raw sockets),
 * events, deadlines, lost servers, malformed and oversize input, stalls, the blocking call, a
 * frame trickled in small writes, the per-peer caps (calls in flight, idle conns) and mutual
 * TLS (certificates made by deploy/gen-certs.sh, which needs the openssl command).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "codec.h"
#include "harness.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "rpc_client.h"
#include "rpc_server.h"

#define NEST_NO_HANDLER "There is no matching message handler defined in the remote service."
#define MULTI_CMD "{\"cmd\":\"multi\",\"svc\":\"interop\"}"

/* What the handlers saw; reset per test. */
struct fixture {
    struct loop *loop;
    struct rpc_server *srv;
    int port;
    int notes;                 /* "note" calls handled */
    cJSON *last_note;          /* data of the last one */
    char last_rid[64];         /* request id of the last echo */
    struct rpc_call *held[16]; /* "hold" calls not answered yet */
    int nheld;
    struct metrics *metrics; /* where the server counts its calls */
};

static struct fixture fx;

/* --- handlers: one function for every route, by command ----------------------------------- */

static void
handle(struct rpc_call *call, const cJSON *data, void *arg)
{
    const char *cmd = rpc_call_cmd(call);
    UNUSED(arg);
    if (strcmp(cmd, "echo") == 0) {
        snprintf(fx.last_rid, sizeof(fx.last_rid), "%s", rpc_call_request_id(call));
        rpc_reply(call, data ? cJSON_Duplicate(data, 1) : NULL);
    } else if (strcmp(cmd, "fail") == 0) {
        rpc_reply_error(call, "bad_thing", "nope %d", 7);
    } else if (strcmp(cmd, "stream") == 0) {
        rpc_reply_partial(call, cJSON_Parse("{\"seq\":1}"));
        rpc_reply_partial(call, cJSON_Parse("{\"seq\":2}"));
        rpc_reply(call, cJSON_Parse("{\"seq\":3}"));
    } else if (strcmp(cmd, "hold") == 0 && fx.nheld < (int)ARRAY_SIZE(fx.held)) {
        fx.held[fx.nheld++] = call; /* answered by the test, or by finish_held() */
    } else if (strcmp(cmd, "note") == 0) {
        fx.notes++;
        cJSON_Delete(fx.last_note);
        fx.last_note = data ? cJSON_Duplicate(data, 1) : NULL;
        rpc_reply(call, NULL);
    } else if (strcmp(cmd, MULTI_CMD) == 0) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddTrueToObject(r, "multi");
        cJSON_AddItemToObject(r, "data", data ? cJSON_Duplicate(data, 1) : cJSON_CreateNull());
        rpc_reply(call, r);
    } else {
        rpc_reply_error(call, "internal", "unexpected command %s", cmd);
    }
}

static const struct rpc_route routes[] = {
    {"echo", handle}, {"fail", handle},       {"stream", handle},
    {"hold", handle}, {"note", handle, true}, {MULTI_CMD, handle},
};

/* Calls the server counted with outcome "ok" (ok) or any other outcome (!ok). */
static int
counted(bool ok)
{
    char *text = metrics_render(fx.metrics);
    int n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        static const char prefix[] = "chanced_rpc_requests_total{role=\"test\"";
        if (strncmp(line, prefix, sizeof(prefix) - 1) != 0) {
            continue;
        }
        bool is_ok = strstr(line, "outcome=\"ok\"") != NULL;
        if (is_ok == ok) {
            n += atoi(strrchr(line, ' ') + 1);
        }
    }
    free(text);
    return n;
}

/* The value of one series in the server's metrics (0 if absent). */
static double
metric(const char *series)
{
    char *text = metrics_render(fx.metrics);
    double v = 0;
    size_t n = strlen(series);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, series, n) == 0 && line[n] == ' ') {
            v = atof(line + n + 1);
        }
    }
    free(text);
    return v;
}

/* --- fixture ----------------------------------------------------------------------------- */

static int
free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        close(fd);
        return -1;
    }
    close(fd);
    return ntohs(sa.sin_port);
}

/* Starts the server with opts (listen, metrics and role are filled in here); host is where it
 * listens ("127.0.0.1" unless given). */
static bool
start_opts(struct rpc_server_opts *opts, const char *host)
{
    memset(&fx, 0, sizeof(fx));
    signal(SIGPIPE, SIG_IGN);
    log_set_level(getenv("TEST_RPC_DEBUG") ? LOG_DEBUG : LOG_ERROR);
    fx.loop = loop_new();
    fx.metrics = metrics_new();
    CHECK(fx.loop != NULL, "loop_new");
    char listen[64], err[256] = "";
    for (int attempt = 0; attempt < 5 && fx.srv == NULL; attempt++) {
        fx.port = free_port();
        snprintf(listen, sizeof(listen), "%s:%d", host ? host : "127.0.0.1", fx.port);
        opts->listen = listen;
        opts->metrics = fx.metrics;
        opts->role = "test";
        fx.srv = rpc_server_new(fx.loop, opts, routes, ARRAY_SIZE(routes), NULL, err, sizeof(err));
    }
    CHECK(fx.srv != NULL, "rpc_server_new: %s", err);
    return fx.srv != NULL;
}

static bool
start(size_t max_frame, int stall_ms, int max_conns)
{
    memset(&fx, 0, sizeof(fx));
    signal(SIGPIPE, SIG_IGN);
    log_set_level(getenv("TEST_RPC_DEBUG") ? LOG_DEBUG : LOG_ERROR);
    fx.loop = loop_new();
    fx.metrics = metrics_new();
    CHECK(fx.loop != NULL, "loop_new");
    char listen[64], err[256] = "";
    for (int attempt = 0; attempt < 5 && fx.srv == NULL; attempt++) {
        fx.port = free_port();
        snprintf(listen, sizeof(listen), "127.0.0.1:%d", fx.port);
        struct rpc_server_opts opts = {listen, max_frame, stall_ms, max_conns, fx.metrics, "test"};
        fx.srv = rpc_server_new(fx.loop, &opts, routes, ARRAY_SIZE(routes), NULL, err, sizeof(err));
    }
    CHECK(fx.srv != NULL, "rpc_server_new: %s", err);
    return fx.srv != NULL;
}

static void
finish_held(void)
{
    for (int i = 0; i < fx.nheld; i++) {
        rpc_reply(fx.held[i], NULL);
    }
    fx.nheld = 0;
}

static void
stop(struct rpc_client *cli)
{
    finish_held();
    rpc_client_free(cli);
    rpc_server_free(fx.srv);
    loop_free(fx.loop);
    metrics_free(fx.metrics);
    cJSON_Delete(fx.last_note);
    memset(&fx, 0, sizeof(fx));
}

struct waiter {
    bool (*pred)(void *arg); /* NULL: just wait out the time */
    void *arg;
    int64_t deadline;
    bool met;
};

static void
wait_tick(evutil_socket_t fd, short what, void *arg)
{
    struct waiter *w = arg;
    UNUSED(fd);
    UNUSED(what);
    if (w->pred && w->pred(w->arg)) {
        w->met = true;
    }
    if (w->met || time_mono_ms() >= w->deadline) {
        event_base_loopbreak(loop_base(fx.loop));
    }
}

/* Runs the loop until pred(arg) holds or timeout_ms pass; returns whether it held. */
static bool
run_until(bool (*pred)(void *), void *arg, int timeout_ms)
{
    struct waiter w = {pred, arg, time_mono_ms() + timeout_ms, false};
    if (pred && pred(arg)) {
        return true;
    }
    struct event *tick = loop_timer(fx.loop, 2, true, wait_tick, &w);
    CHECK(loop_run(fx.loop) == 0, "loop_run failed");
    event_free(tick);
    return w.met;
}

static void
run_for(int ms)
{
    run_until(NULL, NULL, ms);
}

/* --- client replies ------------------------------------------------------------------------ */

struct reply {
    int finals;      /* final callbacks (must end at 1) */
    int status;      /* the final status */
    cJSON *result;   /* copy of the final result, or NULL */
    int partials;    /* RPC_PARTIAL callbacks */
    cJSON *items;    /* their results, in order */
    int64_t done_at; /* monotonic ms of the final callback */
};

static void
on_reply(int status, const cJSON *result, void *arg)
{
    struct reply *r = arg;
    if (status == RPC_PARTIAL) {
        r->partials++;
        if (r->items == NULL) {
            r->items = cJSON_CreateArray();
        }
        cJSON_AddItemToArray(r->items, result ? cJSON_Duplicate(result, 1) : cJSON_CreateNull());
        return;
    }
    r->finals++;
    r->status = status;
    cJSON_Delete(r->result);
    r->result = result ? cJSON_Duplicate(result, 1) : NULL;
    r->done_at = time_mono_ms();
}

static bool
reply_done(void *arg)
{
    return ((struct reply *)arg)->finals > 0;
}

static void
reply_clear(struct reply *r)
{
    cJSON_Delete(r->result);
    cJSON_Delete(r->items);
    memset(r, 0, sizeof(*r));
}

static struct rpc_client *
client(void)
{
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", fx.port);
    struct rpc_client_opts opts = {.max_frame = 1 << 20};
    char err[256] = "";
    struct rpc_client *cli = rpc_client_new(fx.loop, addr, &opts, err, sizeof(err));
    CHECK(cli != NULL, "rpc_client_new: %s", err);
    return cli;
}

/* One call, run to its final reply. */
static void
call(struct rpc_client *cli, const char *cmd, const char *data_json, int timeout_ms,
     struct reply *r)
{
    memset(r, 0, sizeof(*r));
    rpc_client_call(cli, cmd, data_json ? cJSON_Parse(data_json) : NULL, timeout_ms, on_reply, r);
    CHECK(run_until(reply_done, r, timeout_ms + 3000), "%s: no final reply", cmd);
}

static bool
cli_connected(void *arg)
{
    return rpc_client_connected(arg);
}

static bool
srv_busy(void *arg)
{
    return rpc_server_inflight(arg) > 0;
}

static bool
json_equals(const cJSON *got, const char *want)
{
    cJSON *w = cJSON_Parse(want);
    bool eq = got && w && cJSON_Compare(got, w, true);
    cJSON_Delete(w);
    return eq;
}

/* --- raw sockets --------------------------------------------------------------------------- */

struct raw {
    int fd;
    struct event *ev; /* read watcher on the loop */
    struct sbuf in;   /* bytes received, not yet taken */
    size_t need;      /* the next frame needs at least this many bytes (codec_decode) */
    bool closed;      /* EOF or reset seen */
};

static void
raw_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct raw *r = arg;
    UNUSED(what);
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0) {
        sbuf_append(&r->in, buf, (size_t)n);
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        r->closed = true;
        event_del(r->ev);
    }
}

static void
raw_open(struct raw *r, int port)
{
    memset(r, 0, sizeof(*r));
    r->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(connect(r->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect: %s", strerror(errno));
    fcntl(r->fd, F_SETFL, fcntl(r->fd, F_GETFL) | O_NONBLOCK);
    r->ev = event_new(loop_base(fx.loop), r->fd, EV_READ | EV_PERSIST, raw_on_read, r);
    event_add(r->ev, NULL);
}

static void
raw_close(struct raw *r)
{
    event_free(r->ev);
    close(r->fd);
    sbuf_cleanup(&r->in);
    memset(r, 0, sizeof(*r));
}

static void
raw_send(struct raw *r, const char *bytes, size_t len)
{
    while (len > 0) {
        ssize_t n = send(r->fd, bytes, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EAGAIN) {
            run_for(5);
            continue;
        }
        if (n <= 0) {
            return; /* the server closed us: the test checks r->closed */
        }
        bytes += n;
        len -= (size_t)n;
    }
}

static void
raw_sends(struct raw *r, const char *s)
{
    raw_send(r, s, strlen(s));
}

/* Sends msg as a frame (raw UTF-8, the way Nest writes it). */
static void
raw_send_json(struct raw *r, const char *json)
{
    char *frame = xasprintf("%lld#%s", codec_utf16_units(json, strlen(json)), json);
    raw_sends(r, frame);
    free(frame);
}

static bool
raw_has_frame(void *arg)
{
    struct raw *r = arg;
    if (r->closed) {
        return true;
    }
    if (r->in.len < r->need) {
        return false; /* a big reply arriving: not decoded again on every tick */
    }
    struct codec_frame f;
    const char *why;
    size_t need = 0;
    int st = codec_decode(r->in.data ? r->in.data : "", r->in.len, 16 << 20, &f, &why, &need);
    cJSON_Delete(f.json);
    if (st == CODEC_NEED_MORE) {
        r->need = need;
    }
    return st == CODEC_COMPLETE;
}

static bool
raw_is_closed(void *arg)
{
    return ((struct raw *)arg)->closed;
}

/* Waits for and removes the next frame; its body text goes to *body if set (caller frees). */
static cJSON *
raw_next(struct raw *r, char **body)
{
    CHECK(run_until(raw_has_frame, r, 3000), "no frame arrived");
    struct codec_frame f;
    const char *why = NULL;
    int st = codec_decode(r->in.data ? r->in.data : "", r->in.len, 16 << 20, &f, &why, NULL);
    if (st != CODEC_COMPLETE) {
        CHECK(0, "no complete frame (status %d, %s, closed %d)", st, why ? why : "", r->closed);
        return NULL;
    }
    if (body) {
        const char *hash = memchr(r->in.data, '#', f.consumed);
        *body = xstrndup(hash + 1, f.consumed - (size_t)(hash + 1 - r->in.data));
    }
    memmove(r->in.data, r->in.data + f.consumed, r->in.len - f.consumed + 1);
    r->in.len -= f.consumed;
    r->need = 0;
    return f.json;
}

/* --- nest_frames.txt ----------------------------------------------------------------------- */

static char *nest_text; /* the whole file, loaded once */

static void
nest_free(void)
{
    free(nest_text);
}

/* The frame labelled label, as a new string (caller frees), or NULL. */
static char *
nest_frame(const char *label)
{
    if (nest_text == NULL) {
        const char *dir = getenv("CHANCED_TEST_DATA") ? getenv("CHANCED_TEST_DATA") : "test/data";
        char *path = xasprintf("%s/nest_frames.txt", dir), chunk[4096];
        FILE *f = fopen(path, "r");
        CHECK(f != NULL, "cannot open %s", path);
        struct sbuf b = {0};
        sbuf_appends(&b, "\n");
        for (size_t n; f && (n = fread(chunk, 1, sizeof(chunk), f)) > 0;) {
            sbuf_append(&b, chunk, n);
        }
        nest_text = sbuf_steal(&b);
        atexit(nest_free);
        free(path);
        if (f) {
            fclose(f);
        }
    }
    char *key = xasprintf("\n%s\t", label);
    const char *p = strstr(nest_text, key);
    size_t klen = strlen(key);
    free(key);
    return p ? xstrndup(p + klen, strcspn(p + klen, "\n")) : NULL;
}

static cJSON *
nest_tree(const char *label)
{
    char *bytes = nest_frame(label);
    struct codec_frame f = {NULL, 0, false};
    const char *why;
    if (bytes == NULL ||
        codec_decode(bytes, strlen(bytes), 1 << 20, &f, &why, NULL) != CODEC_COMPLETE) {
        CHECK(0, "no frame %s", label);
    }
    free(bytes);
    return f.json;
}

/* --- tests ---------------------------------------------------------------------------------- */

static void
test_call_reply(void)
{
    if (!start(1 << 20, 10000, 100)) {
        return;
    }
    struct rpc_client *cli = client(); /* the first call is queued until the connect finishes */
    struct reply r;
    const char *data = "{\"a\":1,\"s\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\",\"l\":[true,null]}";
    call(cli, "echo", data, 2000, &r);
    CHECK(r.status == RPC_OK && json_equals(r.result, data), "echo: status %s",
          rpc_client_status_name(r.status));
    reply_clear(&r);

    /* A caller-supplied request id reaches the handler and is removed from the data. */
    call(cli, "echo", "{\"x\":1,\"_rid\":\"req-abc_1\"}", 2000, &r);
    CHECK(strcmp(fx.last_rid, "req-abc_1") == 0, "request id '%s'", fx.last_rid);
    CHECK(json_equals(r.result, "{\"x\":1}"), "_rid left in data");
    reply_clear(&r);
    call(cli, "echo", "{\"_rid\":\"bad id with spaces\"}", 2000, &r);
    CHECK(strlen(fx.last_rid) == 16 && strspn(fx.last_rid, "0123456789abcdef") == 16,
          "invalid _rid not replaced: '%s'", fx.last_rid);
    reply_clear(&r);

    /* Many calls in flight at once all come back, each exactly once. */
    struct reply many[50];
    for (int i = 0; i < 50; i++) {
        char d[32];
        snprintf(d, sizeof(d), "{\"i\":%d}", i);
        memset(&many[i], 0, sizeof(many[i]));
        rpc_client_call(cli, "echo", cJSON_Parse(d), 3000, on_reply, &many[i]);
    }
    CHECK(run_until(reply_done, &many[49], 4000), "50 calls");
    run_for(20);
    for (int i = 0; i < 50; i++) {
        char d[32];
        snprintf(d, sizeof(d), "{\"i\":%d}", i);
        CHECK(many[i].finals == 1 && many[i].status == RPC_OK && json_equals(many[i].result, d),
              "call %d: finals %d status %d", i, many[i].finals, many[i].status);
        reply_clear(&many[i]);
    }
    CHECK(counted(true) >= 53 && rpc_server_inflight(fx.srv) == 0, "counted %d, inflight %zu",
          counted(true), rpc_server_inflight(fx.srv));
    stop(cli);
}

static void
test_error_and_stream(void)
{
    if (!start(1 << 20, 10000, 100)) {
        return;
    }
    struct rpc_client *cli = client();
    struct reply r;
    call(cli, "fail", "{}", 2000, &r);
    CHECK(r.status == RPC_ERROR, "fail: status %s", rpc_client_status_name(r.status));
    CHECK(json_equals(r.result,
                      "{\"status\":\"error\",\"code\":\"bad_thing\",\"message\":\"nope 7\"}"),
          "error shape");
    CHECK(counted(false) == 1, "counted %d errors", counted(false));
    reply_clear(&r);

    call(cli, "stream", "{}", 2000, &r);
    CHECK(r.status == RPC_OK && json_equals(r.result, "{\"seq\":3}"), "stream final");
    CHECK(r.partials == 2 && json_equals(r.items, "[{\"seq\":1},{\"seq\":2}]"), "%d partials",
          r.partials);
    reply_clear(&r);

    call(cli, "no.such.thing", "{}", 2000, &r);
    CHECK(r.status == RPC_ERROR && cJSON_IsString(r.result) &&
              strcmp(r.result->valuestring, NEST_NO_HANDLER) == 0,
          "unknown pattern: status %s", rpc_client_status_name(r.status));
    reply_clear(&r);

    /* Requests the server refuses before any handler runs. */
    static const char *bad[] = {
        "{\"pattern\":{\"cmd\":\"echo\"},\"data\":{\"a\":1,\"a\":2},\"id\":\"d1\"}",
        "{\"pattern\":{\"cmd\":\"echo\"},\"data\":{\"s\":\"a\\u0000b\"},\"id\":\"d2\"}",
    };
    struct raw raw;
    raw_open(&raw, fx.port);
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        raw_send_json(&raw, bad[i]);
        cJSON *m = raw_next(&raw, NULL);
        const cJSON *code = cJSON_GetObjectItem(cJSON_GetObjectItem(m, "err"), "code");
        CHECK(cJSON_IsString(code) && strcmp(code->valuestring, "bad_request") == 0,
              "case %zu not refused", i);
        cJSON_Delete(m);
    }
    char deep[256];
    int n = snprintf(deep, sizeof(deep), "{\"pattern\":{\"cmd\":\"echo\"},\"id\":\"d3\",\"data\":");
    memset(deep + n, '[', 70);
    memset(deep + n + 70, ']', 70);
    strcpy(deep + n + 140, "}");
    raw_send_json(&raw, deep);
    cJSON *m = raw_next(&raw, NULL);
    CHECK(cJSON_GetObjectItem(m, "err") != NULL, "70 levels deep accepted");
    cJSON_Delete(m);
    raw_close(&raw);
    stop(cli);
}

/* Replays Nest's captured client frames; our replies must equal Nest's, tree for tree. */
static void
test_nest_replay(void)
{
    static const char *scenarios[] = {
        "echo.ascii",
        "echo.persian_emoji",
        "echo.escapes",
        "echo.string_data",
        "echo.number_data",
        "echo.array_data",
        "echo.empty_object",
        "stream",
        "unknown_pattern",
        "claim",
        "pattern.string",
        "pattern.multikey",
        "raw.numeric_id",
        "raw.null_id",
        "raw.pattern_json_string",
        "raw.pattern_unsorted_keys",
        "raw.pattern_json_string_unsorted",
        "raw.pattern_sorted_keys",
        "raw.escaped_unicode",
        "raw.pipelined",
        "raw.byte_by_byte",
    };
    if (!start(1 << 20, 10000, 100)) {
        return;
    }
    struct raw raw;
    raw_open(&raw, fx.port);
    for (size_t s = 0; s < ARRAY_SIZE(scenarios); s++) {
        char label[128];
        bool bytewise = strcmp(scenarios[s], "raw.byte_by_byte") == 0;
        /* Every c2s frame of the scenario (".1", ".2" ... when numbered), in one write. */
        struct sbuf out = {0};
        for (int n = 0; n < 10; n++) {
            snprintf(label, sizeof(label), n ? "c2s.%s.%d" : "c2s.%s", scenarios[s], n);
            char *bytes = nest_frame(label);
            sbuf_appends(&out, bytes ? bytes : "");
            free(bytes);
        }
        CHECK(out.len > 0, "%s: no client frame", scenarios[s]);
        for (size_t b = 0; bytewise && b < out.len; b++) {
            raw_send(&raw, out.data + b, 1);
            run_for(1);
        }
        if (!bytewise) {
            raw_send(&raw, out.data, out.len);
        }
        sbuf_cleanup(&out);
        for (int n = 0; n < 10; n++) {
            snprintf(label, sizeof(label), n ? "s2c.%s.%d" : "s2c.%s", scenarios[s], n);
            char *nest = nest_frame(label), *body = NULL;
            if (nest == NULL) {
                continue;
            }
            cJSON *want = nest_tree(label), *got = raw_next(&raw, &body);
            CHECK(cJSON_Compare(want, got, true), "%s: got %s", label, body ? body : "nothing");
            if (strcmp(scenarios[s], "unknown_pattern") == 0) {
                CHECK(body && strcmp(body, strchr(nest, '#') + 1) == 0,
                      "%s: bytes differ:\n  %s\n  %s", label, body, nest);
            }
            free(nest);
            free(body);
            cJSON_Delete(got);
            cJSON_Delete(want);
        }
    }
    CHECK(raw.in.len == 0 && !raw.closed, "left over: %zu bytes, closed %d", raw.in.len,
          raw.closed);
    raw_close(&raw);
    stop(NULL);
}

static void
test_events(void)
{
    if (!start(1 << 20, 10000, 100)) {
        return;
    }
    struct raw raw;
    raw_open(&raw, fx.port);
    char *e1 = nest_frame("c2s.event.note"), *e2 = nest_frame("c2s.event.note.persian_emoji");
    raw_sends(&raw, e1 ? e1 : "");
    raw_sends(&raw, e2 ? e2 : "");
    free(e1);
    free(e2);
    raw_send_json(&raw, "{\"pattern\":{\"cmd\":\"nobody.listens\"},\"data\":{}}");
    /* an event for a request-only route runs nothing (it would act with nobody told) */
    raw_send_json(&raw, "{\"pattern\":{\"cmd\":\"hold\"},\"data\":{}}");
    raw_send_json(&raw, "{\"pattern\":{\"cmd\":\"echo\"},\"data\":\"after\",\"id\":\"e1\"}");
    cJSON *m = raw_next(&raw, NULL);
    CHECK(json_equals(m, "{\"response\":\"after\",\"isDisposed\":true,\"id\":\"e1\"}"),
          "first reply is not the echo: events were answered");
    cJSON_Delete(m);
    CHECK(fx.notes == 2, "note handler ran %d times", fx.notes);
    CHECK(fx.nheld == 0, "a request-only route ran for an event");
    cJSON *sent = nest_tree("c2s.event.note.persian_emoji");
    CHECK(cJSON_Compare(fx.last_note, cJSON_GetObjectItem(sent, "data"), true), "event data");
    cJSON_Delete(sent);
    run_for(50);
    CHECK(raw.in.len == 0 && !raw.closed, "extra bytes %zu, closed %d", raw.in.len, raw.closed);
    raw_close(&raw);

    /* rpc_client_emit: refused while not connected, delivered once connected. */
    struct rpc_client *cli = client();
    CHECK(rpc_client_emit(cli, "note", cJSON_Parse("{\"n\":0}")) == -1, "emit before connect");
    CHECK(run_until(cli_connected, cli, 2000), "client never connected");
    CHECK(rpc_client_emit(cli, "note", cJSON_Parse("{\"n\":9}")) == 0, "emit");
    struct reply r;
    call(cli, "echo", "{}", 2000, &r); /* after the event on the same conn */
    reply_clear(&r);
    CHECK(fx.notes == 3 && json_equals(fx.last_note, "{\"n\":9}"), "emitted event: %d", fx.notes);
    stop(cli);
}

static void
test_deadline(void)
{
    if (!start(1 << 20, 10000, 100)) {
        return;
    }
    struct rpc_client *cli = client();
    struct reply r;
    int64_t t0 = time_mono_ms();
    call(cli, "hold", "{}", 150, &r);
    int64_t took = r.done_at - t0;
    CHECK(r.status == RPC_TIMEOUT && r.result == NULL, "status %s",
          rpc_client_status_name(r.status));
    CHECK(took >= 140 && took < 2000, "timed out after %lld ms", (long long)took);
    CHECK(fx.nheld == 1 && rpc_server_inflight(fx.srv) == 1, "held %d, inflight %zu", fx.nheld,
          rpc_server_inflight(fx.srv));
    finish_held(); /* the late reply is dropped by the client */
    run_for(30);
    CHECK(r.finals == 1, "%d final callbacks", r.finals);
    reply_clear(&r);
    call(cli, "echo", "{\"still\":true}", 2000, &r);
    CHECK(r.status == RPC_OK, "client unusable after a timeout: %s",
          rpc_client_status_name(r.status));
    reply_clear(&r);

    /* Freeing the client fails what is pending, synchronously and once. */
    memset(&r, 0, sizeof(r));
    rpc_client_call(cli, "hold", cJSON_CreateObject(), 5000, on_reply, &r);
    CHECK(run_until(srv_busy, fx.srv, 2000), "hold not received");
    rpc_client_free(cli);
    CHECK(r.finals == 1 && r.status == RPC_LOST, "after free: finals %d status %s", r.finals,
          rpc_client_status_name(r.status));
    reply_clear(&r);
    stop(NULL);
}

static bool
fd_readable(void *arg)
{
    struct pollfd p = {*(int *)arg, POLLIN, 0};
    return poll(&p, 1, 0) == 1;
}

/* A server that takes the request and drops the connection: the outcome is unknown (LOST). */
static void
test_server_gone(void)
{
    if (!start(1 << 20, 10000, 100)) {
        return;
    }
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    CHECK(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(lfd, 4) == 0 &&
              getsockname(lfd, (struct sockaddr *)&sa, &len) == 0,
          "fake server");
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(sa.sin_port));
    struct rpc_client_opts copts = {.max_frame = 1 << 20};
    char err[256] = "";
    struct rpc_client *cli = rpc_client_new(fx.loop, addr, &copts, err, sizeof(err));
    CHECK(cli != NULL, "rpc_client_new: %s", err);
    CHECK(run_until(cli_connected, cli, 2000), "not connected");
    struct reply r = {0};
    rpc_client_call(cli, "echo", cJSON_CreateObject(), 5000, on_reply, &r);
    int cfd = accept(lfd, NULL, NULL);
    CHECK(run_until(fd_readable, &cfd, 2000), "request never arrived");
    char buf[512];
    CHECK(read(cfd, buf, sizeof(buf)) > 0, "read request");
    close(cfd);
    close(lfd);
    CHECK(run_until(reply_done, &r, 2000), "no reply after the server left");
    CHECK(r.status == RPC_LOST, "status %s, want lost", rpc_client_status_name(r.status));
    reply_clear(&r);

    /* Nobody listens now: the next call is never sent. */
    call(cli, "echo", "{}", 1000, &r);
    CHECK(r.status == RPC_UNAVAILABLE, "status %s, want unavailable",
          rpc_client_status_name(r.status));
    reply_clear(&r);
    rpc_client_free(cli);

    /* The real server goes away between calls. */
    cli = client();
    call(cli, "echo", "{}", 2000, &r);
    CHECK(r.status == RPC_OK, "before: %s", rpc_client_status_name(r.status));
    reply_clear(&r);
    rpc_server_free(fx.srv);
    fx.srv = NULL;
    run_for(50);
    call(cli, "echo", "{}", 1000, &r);
    CHECK(r.status == RPC_UNAVAILABLE, "after: %s", rpc_client_status_name(r.status));
    reply_clear(&r);
    stop(cli);
}

/* A bad peer, or one announcing an oversize frame, loses only its own connection. */
static void
test_malformed_isolated(void)
{
    /* The last ones exceed the 1024-unit limit in the prefix, before any body is sent. */
    static const char *bad[] = {"xx#{}",           "3#{a}", "2#[]", "0#",    "3#{}x",    "#{}",
                                "5#\"\xff\xfe\"x", "99999", "1025", "1025#", "00001025#"};
    if (!start(1024, 10000, 100)) {
        return;
    }
    struct rpc_client *cli = client();
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct raw raw, good;
        raw_open(&good, fx.port);
        raw_open(&raw, fx.port);
        raw_sends(&raw, bad[i]);
        CHECK(run_until(raw_is_closed, &raw, 2000), "'%s': connection left open", bad[i]);
        raw_send_json(&good, "{\"pattern\":{\"cmd\":\"echo\"},\"data\":1,\"id\":1}");
        cJSON *m = raw_next(&good, NULL);
        CHECK(json_equals(m, "{\"response\":1,\"isDisposed\":true,\"id\":1}"), "'%s': neighbour",
              bad[i]);
        cJSON_Delete(m);
        struct reply r;
        call(cli, "echo", "{}", 2000, &r);
        CHECK(r.status == RPC_OK, "'%s': client: %s", bad[i], rpc_client_status_name(r.status));
        reply_clear(&r);
        raw_close(&raw);
        raw_close(&good);
    }
    struct raw raw;
    raw_open(&raw, fx.port);
    raw_sends(&raw, "1024#{\"a\":\"");
    run_for(150);
    CHECK(!raw.closed, "a frame at the limit was refused");
    raw_close(&raw);
    stop(cli);
}

struct trickle {
    struct raw *raw;
    int sent;
};

static void
trickle_tick(evutil_socket_t fd, short what, void *arg)
{
    struct trickle *t = arg;
    UNUSED(fd);
    UNUSED(what);
    if (!t->raw->closed && t->sent < 60) {
        raw_sends(t->raw, "x");
        t->sent++;
    }
}

static void
test_stall(void)
{
    if (!start(1 << 20, 300, 100)) {
        return;
    }
    struct raw raw;
    raw_open(&raw, fx.port);
    int64_t t0 = time_mono_ms();
    raw_sends(&raw, "10#{");
    CHECK(run_until(raw_is_closed, &raw, 3000), "stalled frame left open");
    int64_t took = time_mono_ms() - t0;
    CHECK(took >= 250, "closed after %lld ms, before the stall limit", (long long)took);
    raw_close(&raw);

    /* Idle between frames is not a stall. */
    raw_open(&raw, fx.port);
    run_for(500);
    CHECK(!raw.closed, "idle connection closed");
    raw_close(&raw);

    /*
     * conn.h: "a partial frame older than this closes the conn". A peer that trickles one byte
     * every 100 ms never completes its frame and must not hold the connection forever.
     */
    raw_open(&raw, fx.port);
    raw_sends(&raw, "100#{\"a\":\"");
    struct trickle t = {&raw, 0};
    struct event *ev = loop_timer(fx.loop, 100, true, trickle_tick, &t);
    CHECK(run_until(raw_is_closed, &raw, 2500),
          "trickling peer kept a partial frame open for "
          "2.5 s with stall_ms=300 (%d bytes sent)",
          t.sent);
    event_free(ev);
    raw_close(&raw);
    stop(NULL);
}

static void
test_max_conns(void)
{
    if (!start(1 << 20, 10000, 2)) {
        return;
    }
    struct raw a, b, c;
    raw_open(&a, fx.port);
    raw_open(&b, fx.port);
    run_for(50);
    raw_open(&c, fx.port);
    CHECK(run_until(raw_is_closed, &c, 2000), "third connection accepted");
    raw_send_json(&b, "{\"pattern\":{\"cmd\":\"echo\"},\"data\":2,\"id\":2}");
    cJSON *m = raw_next(&b, NULL);
    CHECK(json_equals(m, "{\"response\":2,\"isDisposed\":true,\"id\":2}"), "b served");
    cJSON_Delete(m);
    raw_close(&a);
    raw_close(&b);
    raw_close(&c);
    stop(NULL);
}

struct sync_job {
    struct rpc_client *cli;
    const char *cmd;
    const char *data;
    int timeout_ms;
    int status;
    cJSON *result;
    int progress; /* stream items seen (loop thread) */
    bool done;    /* set by the thread, read by the loop thread */
};

static void
sync_progress(int status, const cJSON *result, void *arg)
{
    struct sync_job *j = arg;
    CHECK(status == RPC_PARTIAL && result != NULL, "progress status %d", status);
    j->progress++;
}

static void *
sync_thread(void *arg)
{
    struct sync_job *j = arg;
    j->status = rpc_client_call_sync(j->cli, j->cmd, cJSON_Parse(j->data), j->timeout_ms,
                                     &j->result, sync_progress, j);
    __atomic_store_n(&j->done, true, __ATOMIC_RELEASE);
    return NULL;
}

static bool
sync_done(void *arg)
{
    return __atomic_load_n(&((struct sync_job *)arg)->done, __ATOMIC_ACQUIRE);
}

static void
run_sync(struct sync_job *j)
{
    pthread_t th;
    CHECK(pthread_create(&th, NULL, sync_thread, j) == 0, "pthread_create");
    CHECK(run_until(sync_done, j, 5000), "%s: blocking call never returned", j->cmd);
    pthread_join(th, NULL);
}

static void
test_call_sync(void)
{
    if (!start(1 << 20, 10000, 100)) {
        return;
    }
    struct rpc_client *cli = client();
    struct sync_job j = {cli, "echo", "{\"from\":\"thread\"}", 2000, -1, NULL, 0, false};
    run_sync(&j);
    CHECK(j.status == RPC_OK && json_equals(j.result, "{\"from\":\"thread\"}"), "sync echo: %s",
          rpc_client_status_name(j.status));
    cJSON_Delete(j.result);

    struct sync_job s = {cli, "stream", "{}", 2000, -1, NULL, 0, false};
    run_sync(&s);
    CHECK(s.status == RPC_OK && s.progress == 2 && json_equals(s.result, "{\"seq\":3}"),
          "sync stream: %s, %d items", rpc_client_status_name(s.status), s.progress);
    cJSON_Delete(s.result);

    struct sync_job t = {cli, "hold", "{}", 100, -1, NULL, 0, false};
    run_sync(&t);
    CHECK(t.status == RPC_TIMEOUT && t.result == NULL, "sync timeout: %s",
          rpc_client_status_name(t.status));
    stop(cli);
}

/* --- a frame trickled in small writes ------------------------------------------------------ */

struct writer {
    int fd;
    const char *bytes;
    size_t len;
    size_t slice;
};

static void *
writer_thread(void *arg)
{
    struct writer *w = arg;
    int flags = fcntl(w->fd, F_GETFL);
    fcntl(w->fd, F_SETFL, flags & ~O_NONBLOCK);
    for (size_t off = 0; off < w->len; off += w->slice) {
        size_t n = off + w->slice <= w->len ? w->slice : w->len - off;
        if (send(w->fd, w->bytes + off, n, MSG_NOSIGNAL) != (ssize_t)n) {
            break;
        }
        if ((off / w->slice) % 8 == 0) {
            usleep(20); /* let the server read slices, not one big buffer */
        }
    }
    fcntl(w->fd, F_SETFL, flags);
    return NULL;
}

/* A 3 MB request trickled in 400-byte writes is answered, byte for byte (conn.c hands each
 * received chunk to the incremental decoder once; test_codec proves that is linear). */
static void
test_trickled_frame(void)
{
    if (!start(4 << 20, 60000, 100)) {
        return;
    }
    struct sbuf text = {0};
    while (text.len < (3u << 20)) {
        sbuf_appends(&text, "abc\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80xyz");
    }
    cJSON *msg = cJSON_CreateObject();
    cJSON_AddItemToObject(cJSON_AddObjectToObject(msg, "pattern"), "cmd",
                          cJSON_CreateString("echo"));
    cJSON_AddStringToObject(cJSON_AddObjectToObject(msg, "data"), "s", text.data);
    cJSON_AddStringToObject(msg, "id", "t1");
    char *json = cJSON_PrintUnformatted(msg);
    char *frame = xasprintf("%lld#%s", codec_utf16_units(json, strlen(json)), json);
    struct raw raw;
    raw_open(&raw, fx.port);
    struct writer w = {raw.fd, frame, strlen(frame), 400};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, writer_thread, &w) == 0, "pthread_create");
    CHECK(run_until(raw_has_frame, &raw, 60000), "no reply to the trickled frame");
    pthread_join(th, NULL);
    cJSON *m = raw_next(&raw, NULL);
    const char *got =
        cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(m, "response"), "s"));
    CHECK(got != NULL && strcmp(got, text.data) == 0, "echo of the trickled frame differs");
    cJSON_Delete(m);
    raw_close(&raw);
    free(frame);
    free(json);
    cJSON_Delete(msg);
    sbuf_cleanup(&text);
    stop(NULL);
}

/* --- per-peer caps ------------------------------------------------------------------------- */

static bool
held_at_least(void *arg)
{
    return fx.nheld >= *(int *)arg;
}

/* Replies to the first held call and forgets it. */
static void
finish_first_held(void)
{
    rpc_reply(fx.held[0], NULL);
    memmove(fx.held, fx.held + 1, (size_t)(fx.nheld - 1) * sizeof(fx.held[0]));
    fx.nheld--;
}

static void
test_max_inflight(void)
{
    struct rpc_server_opts opts = {
        .max_frame = 1 << 20, .stall_ms = 10000, .max_conns = 100, .max_inflight = 2};
    if (!start_opts(&opts, NULL)) {
        return;
    }
    struct raw raw, other;
    raw_open(&raw, fx.port);
    raw_open(&other, fx.port);
    /* Five requests in one write: two reach the handler, the rest wait unread. */
    for (int i = 1; i <= 5; i++) {
        char req[96];
        snprintf(req, sizeof(req), "{\"pattern\":{\"cmd\":\"hold\"},\"data\":{},\"id\":%d}", i);
        raw_send_json(&raw, req);
    }
    int two = 2, three = 3;
    CHECK(run_until(held_at_least, &two, 3000), "held %d", fx.nheld);
    run_for(200);
    CHECK(fx.nheld == 2, "%d calls in flight on one conn, cap 2", fx.nheld);
    CHECK(metric("chanced_rpc_conns_throttled_total{role=\"test\"}") >= 1, "not counted");
    /* Another conn is served meanwhile. */
    raw_send_json(&other, "{\"pattern\":{\"cmd\":\"echo\"},\"data\":7,\"id\":7}");
    cJSON *m = raw_next(&other, NULL);
    CHECK(json_equals(m, "{\"response\":7,\"isDisposed\":true,\"id\":7}"), "other conn");
    cJSON_Delete(m);
    /* One finishes: the next request is read. Nothing was refused. */
    finish_first_held();
    CHECK(run_until(held_at_least, &two, 3000) && fx.nheld == 2, "held %d after one reply",
          fx.nheld);
    m = raw_next(&raw, NULL);
    CHECK(json_equals(m, "{\"isDisposed\":true,\"id\":1}"), "reply to 1");
    cJSON_Delete(m);
    for (int i = 0; i < 3; i++) {
        finish_first_held();
        run_until(held_at_least, &three, 300);
        CHECK(fx.nheld <= 2, "%d calls in flight on one conn, cap 2", fx.nheld);
    }
    run_for(100);
    finish_held();
    run_for(100);
    int replies = 1;
    while (raw_has_frame(&raw) && !raw.closed) {
        cJSON_Delete(raw_next(&raw, NULL));
        replies++;
    }
    CHECK(replies == 5 && !raw.closed, "%d replies of 5, closed %d", replies, raw.closed);
    CHECK(rpc_server_inflight(fx.srv) == 0, "inflight %zu", rpc_server_inflight(fx.srv));
    raw_close(&raw);
    raw_close(&other);
    stop(NULL);
}

static void
test_idle_timeout(void)
{
    struct rpc_server_opts opts = {
        .max_frame = 1 << 20, .stall_ms = 10000, .max_conns = 100, .idle_ms = 300};
    if (!start_opts(&opts, NULL)) {
        return;
    }
    struct raw raw;
    raw_open(&raw, fx.port);
    int64_t t0 = time_mono_ms();
    CHECK(run_until(raw_is_closed, &raw, 5000), "idle conn left open");
    CHECK(time_mono_ms() - t0 >= 250, "closed after %lld ms, before idle_ms",
          (long long)(time_mono_ms() - t0));
    CHECK(metric("chanced_rpc_conns_idle_closed_total{role=\"test\"}") == 1, "not counted");
    raw_close(&raw);

    /* A call in flight is not idleness; the clock starts when it finishes. */
    raw_open(&raw, fx.port);
    raw_send_json(&raw, "{\"pattern\":{\"cmd\":\"hold\"},\"data\":{},\"id\":1}");
    run_for(900);
    CHECK(!raw.closed && fx.nheld == 1, "closed with a call in flight");
    finish_held();
    cJSON_Delete(raw_next(&raw, NULL));
    CHECK(run_until(raw_is_closed, &raw, 5000), "not closed once idle");

    /* The client dials again by itself after a server closes a conn that served a while. */
    raw_close(&raw);
    struct rpc_client *cli = client();
    struct reply r;
    call(cli, "echo", "{}", 2000, &r);
    reply_clear(&r);
    run_for(1000); /* closed as idle after 300 ms, redialled at once, closed again... */
    CHECK(metric("chanced_rpc_conns_idle_closed_total{role=\"test\"}") >= 3, "%.0f idle closes",
          metric("chanced_rpc_conns_idle_closed_total{role=\"test\"}"));
    CHECK(run_until(cli_connected, cli, 2000), "the client did not dial again");
    call(cli, "echo", "{\"again\":1}", 2000, &r);
    CHECK(r.status == RPC_OK, "after idle closes: %s", rpc_client_status_name(r.status));
    reply_clear(&r);
    stop(cli);
}

/* --- mutual TLS ---------------------------------------------------------------------------- */

static char tls_dir[64]; /* certificates: ca/, a/ (the CA), b/ (another CA) */

static bool
tls_certs(void)
{
    if (tls_dir[0]) {
        return true;
    }
    snprintf(tls_dir, sizeof(tls_dir), "/tmp/test_rpc_tls.XXXXXX");
    if (mkdtemp(tls_dir) == NULL) {
        CHECK(0, "mkdtemp: %s", strerror(errno));
        return false;
    }
    char *cmd = xasprintf("sh deploy/gen-certs.sh %s/one server client >/dev/null && "
                          "sh deploy/gen-certs.sh %s/two client >/dev/null",
                          tls_dir, tls_dir);
    int rc = system(cmd);
    free(cmd);
    CHECK(rc == 0, "deploy/gen-certs.sh failed (%d): is openssl installed?", rc);
    return rc == 0;
}

static void
tls_cleanup(void)
{
    if (tls_dir[0]) {
        char *cmd = xasprintf("rm -rf %s", tls_dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "could not remove %s\n", tls_dir);
        }
        free(cmd);
    }
}

/* "<tls_dir>/<ca>/<role>/<file>" in a static ring of buffers. */
static const char *
tls_path(const char *ca, const char *role, const char *file)
{
    static char bufs[8][160];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof(bufs[0]), "%s/%s/%s/%s", tls_dir, ca, role, file);
    return b;
}

static struct rpc_client *
tls_client(const char *host, const char *ca, const char *cert_ca, bool with_cert)
{
    char addr[80], err[300] = "";
    snprintf(addr, sizeof(addr), "%s:%d", host, fx.port);
    struct rpc_client_opts o = {.max_frame = 1 << 20, .metrics = fx.metrics, .role = "testc"};
    o.tls.ca = tls_path(ca, "client", "ca.crt");
    if (with_cert) {
        o.tls.cert = tls_path(cert_ca, "client", "cert.pem");
        o.tls.key = tls_path(cert_ca, "client", "key.pem");
    }
    struct rpc_client *cli = rpc_client_new(fx.loop, addr, &o, err, sizeof(err));
    CHECK(cli != NULL, "rpc_client_new: %s", err);
    return cli;
}

static bool
server_tls_failed(void *arg)
{
    return metric("chanced_rpc_tls_handshake_failures_total{role=\"test\",side=\"server\"}") >=
           *(double *)arg;
}

static void
test_mutual_tls(void)
{
    if (!tls_certs()) {
        return;
    }
    struct rpc_server_opts opts = {.max_frame = 1 << 20, .stall_ms = 1000, .max_conns = 100};
    opts.tls.ca = tls_path("one", "server", "ca.crt");
    opts.tls.cert = tls_path("one", "server", "cert.pem");
    opts.tls.key = tls_path("one", "server", "key.pem");
    /* Every interface: reachable on 127.0.0.2 too, a name the certificate does not carry. */
    if (!start_opts(&opts, "0.0.0.0")) {
        return;
    }
    /* A client with a certificate from the same CA: served. */
    struct rpc_client *cli = tls_client("127.0.0.1", "one", "one", true);
    struct reply r;
    call(cli, "echo", "{\"over\":\"tls\"}", 5000, &r);
    CHECK(r.status == RPC_OK && json_equals(r.result, "{\"over\":\"tls\"}"), "mutual TLS: %s",
          rpc_client_status_name(r.status));
    reply_clear(&r);
    rpc_client_free(cli);

    /* Plain TCP: the bytes are no ClientHello; no frame is ever decoded, the conn is closed. */
    struct raw raw;
    raw_open(&raw, fx.port);
    raw_send_json(&raw, "{\"pattern\":{\"cmd\":\"note\"},\"data\":{},\"id\":1}");
    CHECK(run_until(raw_is_closed, &raw, 5000), "plain TCP peer left open");
    CHECK(raw.in.len == 0 || (unsigned char)raw.in.data[0] == 0x15,
          "plain TCP peer got %zu bytes that are not a TLS alert", raw.in.len);
    raw_close(&raw);
    double one = 1, two = 2, three = 3;
    CHECK(run_until(server_tls_failed, &one, 2000), "plain TCP not counted");

    /* TLS without a client certificate, and with one from another CA: refused. */
    cli = tls_client("127.0.0.1", "one", NULL, false);
    call(cli, "note", "{}", 3000, &r);
    CHECK(r.status != RPC_OK, "no client certificate: %s", rpc_client_status_name(r.status));
    reply_clear(&r);
    rpc_client_free(cli);
    CHECK(run_until(server_tls_failed, &two, 2000), "missing certificate not counted");
    cli = tls_client("127.0.0.1", "one", "two", true);
    call(cli, "note", "{}", 3000, &r);
    CHECK(r.status != RPC_OK, "another CA's certificate: %s", rpc_client_status_name(r.status));
    reply_clear(&r);
    rpc_client_free(cli);
    CHECK(run_until(server_tls_failed, &three, 2000), "foreign certificate not counted");
    CHECK(fx.notes == 0, "a refused peer reached a handler %d times", fx.notes);

    /* The client checks the server: a name its certificate lacks, or a server from another
     * CA, and nothing is sent. */
    cli = tls_client("127.0.0.2", "one", "one", true);
    call(cli, "note", "{}", 3000, &r);
    CHECK(r.status == RPC_UNAVAILABLE, "127.0.0.2 not in the certificate: %s",
          rpc_client_status_name(r.status));
    reply_clear(&r);
    rpc_client_free(cli);
    cli = tls_client("127.0.0.1", "two", "one", true);
    call(cli, "note", "{}", 3000, &r);
    CHECK(r.status == RPC_UNAVAILABLE, "server from another CA: %s",
          rpc_client_status_name(r.status));
    reply_clear(&r);
    rpc_client_free(cli);
    CHECK(metric("chanced_rpc_tls_handshake_failures_total{role=\"testc\",side=\"client\"}") >= 2,
          "client-side failures not counted");
    CHECK(fx.notes == 0, "a refused peer reached a handler %d times", fx.notes);

    /* A peer that connects and never speaks is dropped at the handshake deadline (1 s). */
    raw_open(&raw, fx.port);
    CHECK(run_until(raw_is_closed, &raw, 5000), "silent peer left open");
    raw_close(&raw);
    stop(NULL);
}

/* Listener and client checks: loopback, mutual TLS or rpc_insecure, files that load. */
static void
test_tls_conf_checks(void)
{
    if (!tls_certs()) {
        return;
    }
    static const char *loop[] = {"127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"};
    static const char *notloop[] = {"0.0.0.0", "::", "10.0.0.1", "chance", "128.0.0.1", "[::]"};
    for (size_t i = 0; i < ARRAY_SIZE(loop); i++) {
        CHECK(rpc_host_is_loopback(loop[i]), "%s not loopback", loop[i]);
    }
    for (size_t i = 0; i < ARRAY_SIZE(notloop); i++) {
        CHECK(!rpc_host_is_loopback(notloop[i]), "%s loopback", notloop[i]);
    }
    memset(&fx, 0, sizeof(fx));
    fx.loop = loop_new();
    char err[400], any[32], lo[32];
    int port = free_port();
    snprintf(any, sizeof(any), "0.0.0.0:%d", port);
    snprintf(lo, sizeof(lo), "127.0.0.1:%d", port);
    struct rpc_server_opts opts = {.listen = any, .max_frame = 1024, .role = "t"};
    CHECK(rpc_server_new(fx.loop, &opts, routes, ARRAY_SIZE(routes), NULL, err, sizeof(err)) ==
                  NULL &&
              strstr(err, "rpc_insecure=true") != NULL,
          "0.0.0.0 without TLS: %s", err);
    opts.tls.cert = tls_path("one", "server", "cert.pem"); /* TLS, but no client check */
    opts.tls.key = tls_path("one", "server", "key.pem");
    CHECK(rpc_server_new(fx.loop, &opts, routes, ARRAY_SIZE(routes), NULL, err, sizeof(err)) ==
              NULL,
          "0.0.0.0 with server-only TLS accepted");
    opts.tls.key = tls_path("two", "client", "key.pem");
    opts.listen = lo;
    CHECK(rpc_server_new(fx.loop, &opts, routes, ARRAY_SIZE(routes), NULL, err, sizeof(err)) ==
                  NULL &&
              (strstr(err, "does not match") != NULL || strstr(err, "mismatch") != NULL),
          "a key of another certificate: %s", err);
    opts.tls.cert = opts.tls.key = NULL;
    opts.listen = any;
    opts.insecure = true;
    struct rpc_server *srv =
        rpc_server_new(fx.loop, &opts, routes, ARRAY_SIZE(routes), NULL, err, sizeof(err));
    CHECK(srv != NULL, "rpc_insecure refused: %s", err);
    rpc_server_free(srv);
    opts.insecure = false;
    opts.loopback_only = true; /* --role=all: the same port on loopback, no TLS needed */
    srv = rpc_server_new(fx.loop, &opts, routes, ARRAY_SIZE(routes), NULL, err, sizeof(err));
    CHECK(srv != NULL, "loopback_only refused: %s", err);
    rpc_server_free(srv);
    struct rpc_client_opts co = {.max_frame = 1024};
    co.tls.cert = tls_path("one", "client", "cert.pem");
    co.tls.key = tls_path("one", "client", "key.pem");
    CHECK(rpc_client_new(fx.loop, "127.0.0.1:1", &co, err, sizeof(err)) == NULL &&
              strstr(err, "rpc_tls_ca") != NULL,
          "a client certificate without a CA: %s", err);
    co.tls.ca = "/nonexistent/ca.crt";
    CHECK(rpc_client_new(fx.loop, "127.0.0.1:1", &co, err, sizeof(err)) == NULL &&
              strstr(err, "/nonexistent/ca.crt") != NULL,
          "a missing CA file: %s", err);
    loop_free(fx.loop);
    memset(&fx, 0, sizeof(fx));
}

static void
test_tls_teardown(void)
{
    tls_cleanup();
}

static const struct test_case cases[] = {
    {"call_reply", test_call_reply},
    {"error_and_stream", test_error_and_stream},
    {"nest_replay", test_nest_replay},
    {"events", test_events},
    {"deadline", test_deadline},
    {"server_gone", test_server_gone},
    {"malformed_isolated", test_malformed_isolated},
    {"stall", test_stall},
    {"max_conns", test_max_conns},
    {"call_sync", test_call_sync},
    {"trickled_frame", test_trickled_frame},
    {"max_inflight", test_max_inflight},
    {"idle_timeout", test_idle_timeout},
    {"mutual_tls", test_mutual_tls},
    {"tls_conf_checks", test_tls_conf_checks},
    {"tls_teardown", test_tls_teardown},
};

HARNESS_MAIN("rpc", cases)
