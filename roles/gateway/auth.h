/*
 * Sessions: opaque random bearer tokens ("chd_" + 64 hex digits) stored only as SHA-256 digests,
 * with expiry and revocation in PostgreSQL; the same token in an HttpOnly SameSite=Strict cookie
 * for a browser, where state-changing requests must also echo the session's CSRF token in the
 * X-CSRF-Token header. Optionally, verified tokens are cached for auth_cache_ms.
 */
#ifndef CHANCED_GATEWAY_AUTH_H
#define CHANCED_GATEWAY_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct gw;
struct http_req;
struct pg_conn;
struct pg_error;

#define AUTH_TOKEN_LEN 68 /* "chd_" + 64 hex digits */
#define AUTH_COOKIE "chanced_session"
#define AUTH_CSRF_COOKIE "chanced_csrf"

/* The authenticated caller of a request. */
struct principal {
    int64_t user_id;     /* users.id */
    char id[24];         /* user_id as text */
    char username[72];   /* as stored */
    bool admin;          /* role = admin */
    int64_t session_id;  /* sessions.id */
    int64_t expires_ms;  /* session expiry, epoch ms */
    char token_hash[65]; /* SHA-256 hex of the token */
};

/*
 * Creates a session on c (inside the caller's transaction): writes a new token and CSRF token
 * (AUTH_TOKEN_LEN + 1 bytes each) and the expiry in epoch ms.
 */
int auth_session_create(struct gw *gw, struct pg_conn *c, int64_t user_id, char *token, char *csrf,
                        int64_t *expires_ms, struct pg_error *err) MUSTCHECK;
/*
 * Authenticates req: a bearer token, else the session cookie (then unsafe methods need the
 * CSRF header). On success fills who and returns 0; otherwise sends 401, 403 or 503 and
 * returns -1.
 */
int auth_request(struct gw *gw, struct http_req *req, struct principal *who) MUSTCHECK;
/* Revokes one session on c (inside the caller's transaction) and forgets it in the cache. */
int auth_session_revoke(struct gw *gw, struct pg_conn *c, const struct principal *who,
                        struct pg_error *err) MUSTCHECK;
/* Revokes every session of a user on c and forgets them in the cache. */
int auth_user_revoke(struct gw *gw, struct pg_conn *c, int64_t user_id,
                     struct pg_error *err) MUSTCHECK;
/* Writes the Set-Cookie lines for a new session (or clearing ones if token is NULL). */
void auth_cookie_headers(struct gw *gw, const char *token, const char *csrf, char *out,
                         size_t size);

struct authcache;
struct authcache *authcache_new(int ttl_ms);
void authcache_free(struct authcache *cache);

#endif
