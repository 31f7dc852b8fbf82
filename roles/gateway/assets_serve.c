/* Serves the embedded web app (assets.h): lookup, conditional GET, caching and security headers. */
#include "assets.h"

#include <stdio.h>
#include <string.h>

#include "http.h"

#define ASSETS_PREFIX "/assets/"
#define APP_PATH_MAX 128 /* longest client-side route the fallback answers */

/*
 * The page may load only its own scripts, styles and images, talk only to its own origin, and
 * never be framed; Trusted Types forbid string-to-DOM sinks (the app builds nodes, never HTML).
 */
#define ASSETS_CSP                                                                                 \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "font-src 'self'; connect-src 'self'; manifest-src 'self'; object-src 'none'; "                \
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "                                \
    "require-trusted-types-for 'script'; trusted-types 'none'"

#define ASSETS_SECURITY_HEADERS                                                                    \
    "Content-Security-Policy: " ASSETS_CSP "\r\n"                                                  \
    "Referrer-Policy: no-referrer\r\n"                                                             \
    "X-Frame-Options: DENY\r\n"                                                                    \
    "Cross-Origin-Opener-Policy: same-origin\r\n"                                                  \
    "Cross-Origin-Resource-Policy: same-origin\r\n"                                                \
    "Permissions-Policy: camera=(), microphone=(), geolocation=(), payment=()\r\n"

#define ASSETS_CACHE_REVALIDATE "no-cache"                           /* always ask; 304 if same */
#define ASSETS_CACHE_IMMUTABLE "public, max-age=31536000, immutable" /* URL names the build */

const struct asset *
assets_find(const char *path)
{
    size_t lo = 0, hi = assets_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(path, assets_table[mid].path);
        if (c == 0) {
            return &assets_table[mid];
        }
        if (c < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return NULL;
}

/* A client-side route of the app (answered with index.html): not the API, not a file name. */
static bool
app_path(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || p[0] != '/' || n > APP_PATH_MAX || strncmp(p, "/api/", 5) == 0 ||
        strcmp(p, "/api") == 0 || strncmp(p, ASSETS_PREFIX, strlen(ASSETS_PREFIX)) == 0) {
        return false;
    }
    for (const char *c = p; *c; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '/' || *c == '-' || *c == '_')) {
            return false; /* a dot (a file name), an escape, anything odd: 404 */
        }
    }
    return true;
}

/* True if the If-None-Match list names etag (weak comparison, as RFC 9110 asks) or is "*". */
static bool
etag_matches(const char *header, const char *etag)
{
    size_t elen = strlen(etag);
    const char *p = header;
    while (p && *p) {
        while (*p == ' ' || *p == '\t' || *p == ',') {
            p++;
        }
        size_t n = strcspn(p, ",");
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t')) {
            n--;
        }
        const char *tag = p;
        if (n >= 2 && tag[0] == 'W' && tag[1] == '/') {
            tag += 2;
            n -= 2;
        }
        if ((n == 1 && tag[0] == '*') || (n == elen && memcmp(tag, etag, elen) == 0)) {
            return true;
        }
        p = strchr(p, ',');
    }
    return false;
}

bool
assets_serve(struct http_req *req)
{
    if (strcmp(http_method(req), "GET") != 0) {
        return false;
    }
    const char *path = http_path(req);
    const struct asset *a = NULL;
    const char *cache = ASSETS_CACHE_REVALIDATE;
    if (strncmp(path, ASSETS_PREFIX, strlen(ASSETS_PREFIX)) == 0) {
        a = assets_find(path + strlen(ASSETS_PREFIX));
        char want[64];
        snprintf(want, sizeof(want), "v=%s", assets_build);
        if (a && strcmp(http_query(req), want) == 0) {
            cache = ASSETS_CACHE_IMMUTABLE;
        }
    } else if (app_path(path)) {
        a = assets_find("index.html");
    }
    if (a == NULL) {
        return false;
    }
    char headers[1024];
    snprintf(headers, sizeof(headers), "ETag: %s\r\nCache-Control: %s\r\n" ASSETS_SECURITY_HEADERS,
             a->etag, cache);
    const char *inm = http_header(req, "If-None-Match");
    if (inm && etag_matches(inm, a->etag)) {
        http_reply(req, 304, a->content_type, headers, "", 0);
    } else {
        http_reply(req, 200, a->content_type, headers, (const char *)a->data, a->len);
    }
    return true;
}
