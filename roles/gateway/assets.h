/*
 * The web app: files of web/ embedded at build time (tools/embed.c writes the table into
 * $(BUILD)/gen/web_assets.c) and served by the gateway next to /api/v1, with caching and
 * security headers. Read-only data: safe from every HTTP worker thread.
 */
#ifndef CHANCED_GATEWAY_ASSETS_H
#define CHANCED_GATEWAY_ASSETS_H

#include <stdbool.h>
#include <stddef.h>

struct http_req;

/* One embedded file (a row of the generated table). */
struct asset {
    const char *path;          /* relative to web/, e.g. "index.html", "app.js" */
    const unsigned char *data; /* the bytes served (NUL-terminated, not counted in len) */
    size_t len;                /* bytes */
    const char *content_type;  /* Content-Type header value */
    const char *etag;          /* strong ETag, quoted: "\"0123456789abcdef\"" */
};

/* The generated table, sorted by path; assets_build is a digest of all files together. */
extern const struct asset assets_table[];
extern const size_t assets_count;
extern const char assets_build[];

/* The embedded file at path (relative to web/), or NULL. */
const struct asset *assets_find(const char *path);

/*
 * Answers req if it is for the web app: GET / and app paths such as /wallet or /admin/logs
 * (index.html), and GET /assets/<file>. ETag and If-None-Match (304), Cache-Control (a year
 * for /assets/<file>?v=<assets_build>, otherwise no-cache), a strict Content-Security-Policy
 * and Referrer-Policy. Returns false, having sent nothing, for anything else (an API path, an
 * unknown asset, another method): the caller then answers 404/405 as usual.
 */
bool assets_serve(struct http_req *req);

#endif
