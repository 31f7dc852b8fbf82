/* Session tokens: creation, verification (with an optional short cache), revocation, cookies. */
#include "auth.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "crypto.h"
#include "gw.h"
#include "http.h"
#include "log.h"
#include "pg.h"

#define AUTHCACHE_BUCKETS 4096 /* hash chains */
#define AUTHCACHE_MAX 100000   /* entries before the cache is emptied */

struct ac_entry {
    struct principal who;  /* the verified caller */
    char csrf_hash[65];    /* session's CSRF digest */
    int64_t cached_ms;     /* monotonic time of verification */
    struct ac_entry *next; /* chain */
};

struct authcache {
    int ttl_ms;                                 /* trust a verification this long */
    size_t n;                                   /* entries */
    pthread_mutex_t lock;                       /* guards the table */
    struct ac_entry *chains[AUTHCACHE_BUCKETS]; /* keyed by token digest */
};

static const struct pg_stmt session_insert = {
    "auth_session_insert", "INSERT INTO sessions (token_hash, csrf_hash, user_id, expires_at)"
                           " VALUES ($1, $2, $3, now() + make_interval(secs => $4::int))"
                           " RETURNING (extract(epoch FROM expires_at) * 1000)::bigint"};

static const struct pg_stmt session_lookup = {
    "auth_session_lookup",
    "SELECT u.id, u.username, u.role, s.id, s.csrf_hash,"
    " (extract(epoch FROM s.expires_at) * 1000)::bigint FROM sessions s"
    " JOIN users u ON u.id = s.user_id"
    " WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()"
    "   AND NOT u.disabled"};
enum {
    LOOKUP_COL_USER,
    LOOKUP_COL_USERNAME,
    LOOKUP_COL_ROLE,
    LOOKUP_COL_SESSION,
    LOOKUP_COL_CSRF,
    LOOKUP_COL_EXPIRES,
};

static const struct pg_stmt session_revoke = {
    "auth_session_revoke",
    "UPDATE sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL"};

static const struct pg_stmt user_revoke = {
    "auth_user_revoke",
    "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL"};

/* ---- cache ---- */

struct authcache *
authcache_new(int ttl_ms)
{
    struct authcache *ac = xcalloc(1, sizeof(*ac));
    ac->ttl_ms = ttl_ms;
    pthread_mutex_init(&ac->lock, NULL);
    return ac;
}

static void
cache_clear_locked(struct authcache *ac)
{
    for (size_t i = 0; i < AUTHCACHE_BUCKETS; i++) {
        while (ac->chains[i]) {
            struct ac_entry *e = ac->chains[i];
            ac->chains[i] = e->next;
            free(e);
        }
    }
    ac->n = 0;
}

void
authcache_free(struct authcache *ac)
{
    if (ac) {
        cache_clear_locked(ac);
        pthread_mutex_destroy(&ac->lock);
        free(ac);
    }
}

static size_t
cache_slot(const char *token_hash)
{
    /* The key is already a uniform digest: its first hex digits are a fine hash. */
    size_t h = 0;
    for (int i = 0; i < 8 && token_hash[i]; i++) {
        char c = token_hash[i];
        h = h * 16 + (size_t)(c <= '9' ? c - '0' : c - 'a' + 10);
    }
    return h % AUTHCACHE_BUCKETS;
}

static bool
cache_get(struct authcache *ac, const char *token_hash, struct principal *who, char *csrf_hash)
{
    if (ac == NULL) {
        return false;
    }
    bool hit = false;
    int64_t now = time_mono_ms();
    pthread_mutex_lock(&ac->lock);
    for (struct ac_entry *e = ac->chains[cache_slot(token_hash)]; e; e = e->next) {
        if (strcmp(e->who.token_hash, token_hash) == 0) {
            /* Fresh enough, and the session itself has not expired meanwhile. */
            if (now - e->cached_ms <= ac->ttl_ms && time_wall_ms() < e->who.expires_ms) {
                *who = e->who;
                memcpy(csrf_hash, e->csrf_hash, sizeof(e->csrf_hash));
                hit = true;
            }
            break;
        }
    }
    pthread_mutex_unlock(&ac->lock);
    return hit;
}

static void
cache_put(struct authcache *ac, const struct principal *who, const char *csrf_hash)
{
    if (ac == NULL) {
        return;
    }
    pthread_mutex_lock(&ac->lock);
    struct ac_entry **chain = &ac->chains[cache_slot(who->token_hash)];
    struct ac_entry *e = *chain;
    while (e && strcmp(e->who.token_hash, who->token_hash) != 0) {
        e = e->next;
    }
    if (e == NULL) {
        if (ac->n >= AUTHCACHE_MAX) {
            cache_clear_locked(ac);
            chain = &ac->chains[cache_slot(who->token_hash)];
        }
        e = xcalloc(1, sizeof(*e));
        e->next = *chain;
        *chain = e;
        ac->n++;
    }
    e->who = *who;
    snprintf(e->csrf_hash, sizeof(e->csrf_hash), "%s", csrf_hash);
    e->cached_ms = time_mono_ms();
    pthread_mutex_unlock(&ac->lock);
}

/* Forgets entries of one token (token_hash) or of one user (token_hash NULL). */
static void
cache_forget(struct authcache *ac, const char *token_hash, int64_t user_id)
{
    if (ac == NULL) {
        return;
    }
    pthread_mutex_lock(&ac->lock);
    for (size_t i = 0; i < AUTHCACHE_BUCKETS; i++) {
        struct ac_entry **pp = &ac->chains[i];
        while (*pp) {
            struct ac_entry *e = *pp;
            bool drop =
                token_hash ? strcmp(e->who.token_hash, token_hash) == 0 : e->who.user_id == user_id;
            if (drop) {
                *pp = e->next;
                free(e);
                ac->n--;
            } else {
                pp = &e->next;
            }
        }
    }
    pthread_mutex_unlock(&ac->lock);
}

/* ---- sessions ---- */

static void
new_secret(char *token)
{
    memcpy(token, "chd_", 4);
    util_random_hex(token + 4, 32);
}

int
auth_session_create(struct gw *gw, struct pg_conn *c, int64_t user_id, char *token, char *csrf,
                    int64_t *expires_ms, struct pg_error *err)
{
    char token_hash[CRYPTO_SHA256_HEX], csrf_hash[CRYPTO_SHA256_HEX], uid[24], ttl[24];
    new_secret(token);
    new_secret(csrf);
    crypto_sha256_hex(token, AUTH_TOKEN_LEN, token_hash);
    crypto_sha256_hex(csrf, AUTH_TOKEN_LEN, csrf_hash);
    snprintf(uid, sizeof(uid), "%" PRId64, user_id);
    snprintf(ttl, sizeof(ttl), "%lld", gw->conf->token_ttl_s);
    const char *params[] = {token_hash, csrf_hash, uid, ttl};
    struct pg_result *res = NULL;
    if (pg_exec(c, &session_insert, 4, params, &res, err) != 0) {
        return -1;
    }
    *expires_ms = pg_int(res, 0, 0);
    pg_result_free(res);
    return 0;
}

static bool
token_well_formed(const char *t)
{
    if (strlen(t) != AUTH_TOKEN_LEN || strncmp(t, "chd_", 4) != 0) {
        return false;
    }
    for (const char *p = t + 4; *p; p++) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) {
            return false;
        }
    }
    return true;
}

static int
unauthorized(struct http_req *req, const char *detail)
{
    http_problem(req, 401, "unauthenticated", detail,
                 "WWW-Authenticate: Bearer realm=\"chanced\"\r\n");
    return -1;
}

static bool
unsafe_method(const char *m)
{
    return strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0 && strcmp(m, "OPTIONS") != 0;
}

/* Verifies the token digest against PostgreSQL; 1 found, 0 not, -1 after sending 503. */
static int
lookup(struct gw *gw, struct http_req *req, struct principal *who, char *csrf_hash)
{
    struct pg_error err;
    struct pg_result *res = NULL;
    struct pg_conn *c = pg_acquire(gw->pg, (int)gw->conf->pg_acquire_timeout_ms, &err);
    const char *params[] = {who->token_hash};
    if (c == NULL || pg_exec(c, &session_lookup, 1, params, &res, &err) != 0) {
        pg_release(gw->pg, c);
        gw_pg_status(gw, err.cls != PG_ERR_CONNECTION);
        log_warn("auth_lookup_failed", "reason=\"%s\"", err.message);
        http_problem(req, 503, "unavailable", "the session store is unavailable",
                     "Retry-After: 1\r\n");
        return -1;
    }
    pg_release(gw->pg, c);
    int found = pg_rows(res) == 1;
    if (found) {
        who->user_id = pg_int(res, 0, LOOKUP_COL_USER);
        snprintf(who->id, sizeof(who->id), "%" PRId64, who->user_id);
        snprintf(who->username, sizeof(who->username), "%s", pg_text(res, 0, LOOKUP_COL_USERNAME));
        who->admin = strcmp(pg_text(res, 0, LOOKUP_COL_ROLE), "admin") == 0;
        who->session_id = pg_int(res, 0, LOOKUP_COL_SESSION);
        snprintf(csrf_hash, CRYPTO_SHA256_HEX, "%s", pg_text(res, 0, LOOKUP_COL_CSRF));
        who->expires_ms = pg_int(res, 0, LOOKUP_COL_EXPIRES);
    }
    pg_result_free(res);
    return found;
}

int
auth_request(struct gw *gw, struct http_req *req, struct principal *who)
{
    char token[AUTH_TOKEN_LEN + 2] = "", csrf_hash[CRYPTO_SHA256_HEX];
    bool via_cookie = false;
    const char *h = http_header(req, "Authorization");
    memset(who, 0, sizeof(*who));
    if (h) {
        if (strncasecmp(h, "Bearer ", 7) != 0) {
            return unauthorized(req, "use an Authorization: Bearer token");
        }
        snprintf(token, sizeof(token), "%s", h + 7);
    } else if (http_cookie(req, AUTH_COOKIE, token, sizeof(token))) {
        via_cookie = true;
    } else {
        return unauthorized(req, "authentication required");
    }
    if (!token_well_formed(token)) {
        return unauthorized(req, "the token is malformed, expired or revoked");
    }
    crypto_sha256_hex(token, AUTH_TOKEN_LEN, who->token_hash);
    if (!cache_get(gw->authcache, who->token_hash, who, csrf_hash)) {
        int found = lookup(gw, req, who, csrf_hash);
        if (found < 0) {
            return -1;
        }
        if (found == 0) {
            return unauthorized(req, "the token is malformed, expired or revoked");
        }
        cache_put(gw->authcache, who, csrf_hash);
    }
    if (via_cookie && unsafe_method(http_method(req))) {
        const char *sent = http_header(req, "X-CSRF-Token");
        char sent_hash[CRYPTO_SHA256_HEX];
        if (sent == NULL || !token_well_formed(sent)) {
            http_problem(req, 403, "csrf_failed", "send the X-CSRF-Token header", NULL);
            return -1;
        }
        crypto_sha256_hex(sent, AUTH_TOKEN_LEN, sent_hash);
        if (!crypto_equal(sent_hash, csrf_hash, 64)) {
            http_problem(req, 403, "csrf_failed", "the X-CSRF-Token does not match", NULL);
            return -1;
        }
    }
    return 0;
}

int
auth_session_revoke(struct gw *gw, struct pg_conn *c, const struct principal *who,
                    struct pg_error *err)
{
    char sid[24];
    snprintf(sid, sizeof(sid), "%" PRId64, who->session_id);
    const char *params[] = {sid};
    cache_forget(gw->authcache, who->token_hash, 0);
    return pg_exec(c, &session_revoke, 1, params, NULL, err);
}

int
auth_user_revoke(struct gw *gw, struct pg_conn *c, int64_t user_id, struct pg_error *err)
{
    char uid[24];
    snprintf(uid, sizeof(uid), "%" PRId64, user_id);
    const char *params[] = {uid};
    cache_forget(gw->authcache, NULL, user_id);
    return pg_exec(c, &user_revoke, 1, params, NULL, err);
}

void
auth_cookie_headers(struct gw *gw, const char *token, const char *csrf, char *out, size_t size)
{
    const char *secure = gw->conf->cookie_secure ? "; Secure" : "";
    if (token == NULL) {
        snprintf(out, size,
                 "Set-Cookie: " AUTH_COOKIE
                 "=; Path=/api; Max-Age=0; HttpOnly; SameSite=Strict%s\r\n"
                 "Set-Cookie: " AUTH_CSRF_COOKIE "=; Path=/; Max-Age=0; SameSite=Strict%s\r\n",
                 secure, secure);
        return;
    }
    snprintf(out, size,
             "Set-Cookie: " AUTH_COOKIE
             "=%s; Path=/api; Max-Age=%lld; HttpOnly; SameSite=Strict%s\r\n"
             "Set-Cookie: " AUTH_CSRF_COOKIE "=%s; Path=/; Max-Age=%lld; SameSite=Strict%s\r\n",
             token, gw->conf->token_ttl_s, secure, csrf, gw->conf->token_ttl_s, secure);
}
