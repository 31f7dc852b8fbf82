/* Accounts: signup, login, logout, /me. Passwords never leave this file unwiped. */
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "audit.h"
#include "gw.h"
#include "json.h"
#include "log.h"
#include "gwmetrics.h"
#include "passwd.h"
#include "pg.h"
#include "ratelimit.h"

#define USERNAME_MIN 3
#define USERNAME_MAX 32
#define PASSWORD_MIN 8
#define PASSWORD_MAX 256 /* argon2 takes any length; this bounds the work an attacker can ask */

static const char *const credential_fields[] = {"username", "password", NULL};

static const struct pg_stmt user_insert = {
    "auth_user_insert",
    "INSERT INTO users (username, password_hash) VALUES ($1, $2)"
    " RETURNING id, username, role, (extract(epoch FROM created_at) * 1000)::bigint"};
enum { USER_COL_ID, USER_COL_NAME, USER_COL_ROLE, USER_COL_CREATED };
static const struct pg_stmt wallet_insert = {"auth_wallet_insert",
                                             "INSERT INTO wallets (user_id) VALUES ($1)"};
static const struct pg_stmt user_by_name = {
    "auth_user_by_name", "SELECT id, username, password_hash, role, disabled FROM users"
                         " WHERE lower(username) = lower($1)"};
enum { BYNAME_COL_ID, BYNAME_COL_NAME, BYNAME_COL_HASH, BYNAME_COL_ROLE, BYNAME_COL_DISABLED };
static const struct pg_stmt user_rehash = {
    "auth_user_rehash", "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1"};
static const struct pg_stmt me = {
    "auth_me",
    "SELECT u.id, u.username, u.role, (extract(epoch FROM u.created_at) * 1000)::bigint,"
    " coalesce(w.balance, 0) FROM users u LEFT JOIN wallets w ON w.user_id = u.id WHERE u.id = $1"};
enum { ME_COL_ID, ME_COL_NAME, ME_COL_ROLE, ME_COL_CREATED, ME_COL_BALANCE };

/*
 * Login and signup limits shared by every gateway of the database: token buckets in the UNLOGGED
 * table rate_limits (migration 5), refilled by the database's clock, one statement per bucket and
 * no session state (so a transaction pooler is fine). A refused take leaves the bucket as it is.
 */
static const struct pg_stmt limit_take = {
    "auth_limit_take",
    "INSERT INTO rate_limits AS r (key, tokens, ok, at) VALUES ($1, $3::float8 - 1, true, now())"
    " ON CONFLICT (key) DO UPDATE SET (tokens, ok, at) ="
    " (SELECT t - CASE WHEN t >= 1 THEN 1 ELSE 0 END, t >= 1, now() FROM (SELECT least($3::float8,"
    "  r.tokens + $2::float8 * greatest(0, extract(epoch FROM now() - r.at))::float8) AS t) s)"
    " RETURNING ok, tokens"};
static const struct pg_stmt limit_refund = {
    "auth_limit_refund",
    "UPDATE rate_limits SET tokens = least($2::float8, tokens + 1) WHERE key = $1"};
static const struct pg_stmt limit_clear = {"auth_limit_clear",
                                           "DELETE FROM rate_limits WHERE key = $1"};
static const struct pg_stmt limit_prune = {
    "auth_limit_prune",
    "DELETE FROM rate_limits WHERE at < now() - make_interval(secs => $1::float8)"};

#define LIMIT_PRUNE_MS 10000 /* each gateway prunes full buckets at most this often */
#define LOGIN_DELAYED_MAX 8  /* slowed logins asleep at once; each holds an HTTP worker */

static int64_t next_prune_ms; /* atomic; one gateway role per process */
static int delayed_logins;    /* atomic: slowed logins asleep now */

/* Takes a token from the shared bucket key (per_min a minute, burst at once): 0 if taken, else
 * the milliseconds until one is due; -1 if PostgreSQL failed (err filled). */
static int64_t
shared_take(struct pg_conn *c, const char *key, long long per_min, long long burst,
            struct pg_error *err)
{
    char rate[32], cap[32];
    snprintf(rate, sizeof(rate), "%.17g", (double)per_min / 60.0);
    snprintf(cap, sizeof(cap), "%lld", burst);
    const char *params[] = {key, rate, cap};
    struct pg_result *res = NULL;
    if (pg_exec(c, &limit_take, 3, params, &res, err) != 0) {
        return -1;
    }
    int64_t wait = 0;
    if (!pg_bool(res, 0, 0)) {
        double ms = (1.0 - strtod(pg_text(res, 0, 1), NULL)) * 60000.0 / (double)per_min;
        wait = ms < 1.0 ? 1 : (int64_t)ceil(ms);
    }
    pg_result_free(res);
    return wait;
}

/* Bookkeeping after the answer is decided: a failure only costs a log line. */
static void
shared_update(struct pg_conn *c, const struct pg_stmt *stmt, const char *key, long long burst)
{
    char cap[32];
    struct pg_error err;
    snprintf(cap, sizeof(cap), "%lld", burst);
    const char *params[] = {key, cap};
    if (pg_exec(c, stmt, stmt == &limit_refund ? 2 : 1, params, NULL, &err) != 0) {
        log_warn("rate_limit_update_failed", "reason=\"%s\"", err.message);
    }
}

/* Drops buckets untouched for longer than any takes to refill: such a row says nothing an absent
 * one does not. The per-minute buckets are full after a minute; the address bucket after
 * login_burst_ip / login_rate_ip minutes. */
static void
shared_prune(struct gw *gw, struct pg_conn *c)
{
    int64_t now = time_mono_ms(), due = __atomic_load_n(&next_prune_ms, __ATOMIC_RELAXED);
    if (now < due || !__atomic_compare_exchange_n(&next_prune_ms, &due, now + LIMIT_PRUNE_MS, false,
                                                  __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        return;
    }
    const struct gateway_conf *cf = gw->conf;
    char secs[32];
    struct pg_error err;
    snprintf(secs, sizeof(secs), "%.0f",
             fmax(60.0, 60.0 * (double)cf->login_burst_ip / (double)cf->login_rate_ip) + 1.0);
    const char *params[] = {secs};
    if (pg_exec(c, &limit_prune, 1, params, NULL, &err) != 0) {
        log_warn("rate_limit_prune_failed", "reason=\"%s\"", err.message);
    }
}

static void
rate_limited_ms(struct api_call *call, int64_t wait_ms, const char *what)
{
    api_rate_limited(call, (int)((wait_ms + 999) / 1000), what);
}

static void
hashing_busy(struct api_call *call)
{
    http_problem(call->req, 503, "busy",
                 "too many passwords are being checked at once; retry after 1 s",
                 "Retry-After: 1\r\n");
}

bool
api_username_ok(const char *u)
{
    size_t n = strlen(u);
    if (n < USERNAME_MIN || n > USERNAME_MAX || !isalnum((unsigned char)u[0])) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)u[i];
        if (!(isalnum(c) || c == '.' || c == '_' || c == '-') || c > 127) {
            return false;
        }
    }
    return true;
}

/* Reads {username, password}; NULL after answering. */
static cJSON *
read_credentials(struct api_call *call, const char **user, const char **pass)
{
    char err[160];
    cJSON *body = api_read_json(call, credential_fields);
    if (body == NULL) {
        return NULL;
    }
    if (json_get_string(body, "username", true, 64, user, err, sizeof(err)) != 0 ||
        json_get_string(body, "password", true, PASSWORD_MAX, pass, err, sizeof(err)) != 0) {
        http_problem(call->req, 422, "validation_failed", err, NULL);
        cJSON_Delete(body);
        return NULL;
    }
    return body;
}

static void
wipe_password(cJSON *body)
{
    cJSON *p = cJSON_GetObjectItemCaseSensitive(body, "password");
    if (cJSON_IsString(p)) {
        util_wipe(p->valuestring, strlen(p->valuestring));
    }
    cJSON_Delete(body);
}

static void
session_reply(struct api_call *call, int status, const char *uid, const char *username,
              const char *role, const char *token, const char *csrf, int64_t expires_ms)
{
    char cookies[512];
    auth_cookie_headers(call->gw, token, csrf, cookies, sizeof(cookies));
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "token", token);
    cJSON_AddStringToObject(b, "token_type", "Bearer");
    cJSON_AddNumberToObject(b, "expires_at", (double)expires_ms);
    cJSON_AddStringToObject(b, "csrf_token", csrf);
    cJSON *u = cJSON_AddObjectToObject(b, "user");
    cJSON_AddNumberToObject(u, "id", (double)strtoll(uid, NULL, 10));
    cJSON_AddStringToObject(u, "username", username);
    cJSON_AddStringToObject(u, "role", role);
    api_reply(call, status, b, cookies);
}

static char *
user_event(const char *type, const char *uid, const char *username, const char *role,
           const char *message, cJSON *data)
{
    struct audit_actor actor = {uid, username, role};
    cJSON *subject = cJSON_CreateObject();
    cJSON_AddStringToObject(subject, "user_id", uid);
    cJSON_AddStringToObject(subject, "username", username);
    return audit_event(type, &actor, subject, data, message);
}

struct signup {
    struct gw *gw;
    const char *user, *hash;
    char *token, *csrf;    /* out: the first session */
    int64_t expires;       /* out */
    struct pg_result *res; /* out: the new user row (user_insert's columns) */
};

/* The user, the wallet and the first session, with user.signed_up. */
static int
apply_signup(struct pg_conn *c, void *arg, char **event, struct pg_error *err)
{
    struct signup *su = arg;
    const char *p1[] = {su->user, su->hash};
    if (pg_exec(c, &user_insert, 2, p1, &su->res, err) != 0) {
        return -1;
    }
    const char *id = pg_text(su->res, 0, USER_COL_ID), *name = pg_text(su->res, 0, USER_COL_NAME);
    const char *p2[] = {id};
    if (pg_exec(c, &wallet_insert, 1, p2, NULL, err) != 0 ||
        auth_session_create(su->gw, c, pg_int(su->res, 0, USER_COL_ID), su->token, su->csrf,
                            &su->expires, err) != 0) {
        return -1;
    }
    char msg[128];
    snprintf(msg, sizeof(msg), "%s signed up", name);
    *event = user_event("user.signed_up", id, name, "user", msg, NULL);
    return 1;
}

void
api_auth_signup(struct api_call *call)
{
    struct gw *gw = call->gw;
    const char *user = NULL, *pass = NULL;
    char addr[RATELIMIT_ADDR_MAX], key[RATELIMIT_ADDR_MAX + 16];
    char hash[PASSWD_ENCODED_MAX], token[AUTH_TOKEN_LEN + 1], csrf[AUTH_TOKEN_LEN + 1];
    snprintf(addr, sizeof(addr), "%s", http_client_bucket(call->req));
    int wait = ratelimit_take(gw->rl_signup_ip, addr);
    if (wait > 0) {
        api_rate_limited(call, wait, "signups from this address");
        return;
    }
    cJSON *body = read_credentials(call, &user, &pass);
    if (body == NULL) {
        return;
    }
    struct pg_conn *c = NULL;
    struct pg_error err = {0};
    if (!api_username_ok(user)) {
        http_problem(call->req, 422, "validation_failed",
                     "username must be 3 to 32 of A-Z a-z 0-9 . _ - starting with a letter or "
                     "digit",
                     NULL);
        goto out;
    }
    if (strlen(pass) < PASSWORD_MIN) {
        http_problem(call->req, 422, "validation_failed", "password must be at least 8 bytes",
                     NULL);
        goto out;
    }
    if ((c = api_pg(call)) == NULL) {
        goto out;
    }
    snprintf(key, sizeof(key), "signup.ip:%s", addr);
    int64_t wait_ms = shared_take(c, key, gw->conf->signup_rate_ip, gw->conf->signup_rate_ip, &err);
    if (wait_ms != 0) {
        if (wait_ms < 0) {
            api_pg_problem(call, &err);
        } else {
            rate_limited_ms(call, wait_ms, "signups from this address");
        }
        goto out;
    }
    /* No connection is held while hashing: the pool is for statements, not for waiting. */
    pg_release(gw->pg, c);
    c = NULL;
    int rc = passwd_hash(gw->passwd, pass, strlen(pass), hash);
    if (rc != PASSWD_OK) {
        hashing_busy(call);
        goto out;
    }
    if ((c = api_pg(call)) == NULL) {
        goto out;
    }
    struct signup su = {gw, user, hash, token, csrf, 0, NULL};
    if (audit_commit(c, gw->relay, apply_signup, &su, &err) > 0) {
        session_reply(call, 201, pg_text(su.res, 0, USER_COL_ID), pg_text(su.res, 0, USER_COL_NAME),
                      pg_text(su.res, 0, USER_COL_ROLE), token, csrf, su.expires);
    } else if (err.cls == PG_ERR_UNIQUE) {
        http_problem(call->req, 409, "username_taken", "that username is taken", NULL);
    } else {
        api_pg_problem(call, &err);
    }
    pg_result_free(su.res);
out:
    util_wipe(hash, sizeof(hash));
    pg_release(gw->pg, c);
    wipe_password(body);
}

/* Writes a login.failed event (own transaction); failures are logged, not fatal to the answer. */
static void
record_failed_login(struct gw *gw, struct pg_conn *c, const struct pg_result *res, const char *user,
                    const char *reason)
{
    char msg[160], name[65];
    struct pg_error err;
    /* The attempted name is the client's text: escaped and bounded so the event stays valid. */
    audit_printable(user, name, sizeof(name));
    if (name[0] == '\0') {
        snprintf(name, sizeof(name), "-");
    }
    snprintf(msg, sizeof(msg), "failed login for %s (%s)", name, reason);
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "reason", reason);
    cJSON *subject = cJSON_CreateObject();
    cJSON_AddStringToObject(subject, "username", name);
    if (res && pg_rows(res) == 1) {
        cJSON_AddStringToObject(subject, "user_id", pg_text(res, 0, BYNAME_COL_ID));
    }
    char *event = audit_event("login.failed", NULL, subject, data, msg);
    if (audit_record(c, gw->relay, event, &err) != 0) {
        log_warn("audit_failed", "type=login.failed reason=\"%s\"", err.message);
    }
    free(event);
}

struct login {
    struct gw *gw;
    const struct pg_result *user; /* user_by_name's row */
    const char *newhash;          /* a rehash to store, or NULL */
    char *token, *csrf;           /* out: the session */
    int64_t expires;              /* out */
};

/* The session (and a rehash, if due), with login.succeeded. */
static int
apply_login(struct pg_conn *c, void *arg, char **event, struct pg_error *err)
{
    struct login *l = arg;
    const char *uid = pg_text(l->user, 0, BYNAME_COL_ID);
    const char *name = pg_text(l->user, 0, BYNAME_COL_NAME);
    const char *params[] = {uid, l->newhash};
    if ((l->newhash && pg_exec(c, &user_rehash, 2, params, NULL, err) != 0) ||
        auth_session_create(l->gw, c, pg_int(l->user, 0, BYNAME_COL_ID), l->token, l->csrf,
                            &l->expires, err) != 0) {
        return -1;
    }
    char msg[128];
    snprintf(msg, sizeof(msg), "%s logged in", name);
    *event =
        user_event("login.succeeded", uid, name, pg_text(l->user, 0, BYNAME_COL_ROLE), msg, NULL);
    return 1;
}

/* Sleeps ms for a login of a username past login_rate_user: slowed, not refused, so strangers
 * cannot lock its owner out. -1 (answered 503) if too many slowed logins already sleep. */
static int
login_delay(struct api_call *call, int64_t ms)
{
    if (__atomic_add_fetch(&delayed_logins, 1, __ATOMIC_RELAXED) > LOGIN_DELAYED_MAX) {
        __atomic_sub_fetch(&delayed_logins, 1, __ATOMIC_RELAXED);
        gwmetrics_count(call->gw->metrics, M_LOGIN_BUSY, 1);
        http_problem(call->req, 503, "busy",
                     "too many logins for throttled usernames are waiting; retry after 1 s",
                     "Retry-After: 1\r\n");
        return -1;
    }
    gwmetrics_count(call->gw->metrics, M_LOGIN_SLOWED, 1);
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
    __atomic_sub_fetch(&delayed_logins, 1, __ATOMIC_RELAXED);
    return 0;
}

/* The shared login limits, in order: attempts from the address (429), failures for this name
 * from this address (429, that address only), failures for this name from anywhere (a delay).
 * 0 to go on (*delay_ms set, *user_taken if the name's bucket gave a token), -1 if answered. */
static int
login_limits(struct api_call *call, struct pg_conn *c, const char *addr, const char *name,
             int64_t *delay_ms, bool *user_taken)
{
    const struct gateway_conf *cf = call->gw->conf;
    char key[RATELIMIT_ADDR_MAX + 128];
    struct pg_error err;
    int64_t w;
    snprintf(key, sizeof(key), "login.ip:%s", addr);
    if ((w = shared_take(c, key, cf->login_rate_ip, cf->login_burst_ip, &err)) > 0) {
        rate_limited_ms(call, w, "login attempts from this address");
        return -1;
    }
    if (w == 0) {
        snprintf(key, sizeof(key), "login.pair:%s %s", addr, name);
        if ((w = shared_take(c, key, cf->login_fail_rate, cf->login_fail_rate, &err)) > 0) {
            rate_limited_ms(call, w, "failed logins for this username from this address");
            return -1;
        }
    }
    if (w == 0) {
        snprintf(key, sizeof(key), "login.user:%s", name);
        w = shared_take(c, key, cf->login_rate_user, cf->login_rate_user, &err);
    }
    if (w < 0) {
        api_pg_problem(call, &err);
        return -1;
    }
    *user_taken = w == 0;
    *delay_ms = w < cf->login_user_delay_ms ? w : cf->login_user_delay_ms;
    shared_prune(call->gw, c);
    return 0;
}

/* A successful login clears the failures of its (name, address) and gives back the name's token:
 * the limits count failures. */
static void
login_forgive(struct gw *gw, struct pg_conn *c, const char *addr, const char *name, bool user_taken)
{
    char key[RATELIMIT_ADDR_MAX + 128];
    snprintf(key, sizeof(key), "login.pair:%s %s", addr, name);
    shared_update(c, &limit_clear, key, 0);
    if (user_taken) {
        snprintf(key, sizeof(key), "login.user:%s", name);
        shared_update(c, &limit_refund, key, gw->conf->login_rate_user);
    }
}

void
api_auth_login(struct api_call *call)
{
    struct gw *gw = call->gw;
    const char *user = NULL, *pass = NULL;
    char addr[RATELIMIT_ADDR_MAX], name[96], token[AUTH_TOKEN_LEN + 1], csrf[AUTH_TOKEN_LEN + 1],
        rehash[PASSWD_ENCODED_MAX];
    snprintf(addr, sizeof(addr), "%s", http_client_bucket(call->req));
    /* This process's bucket first: a flood from one address costs no PostgreSQL round trip. */
    int wait = ratelimit_take(gw->rl_login_ip, addr);
    if (wait > 0) {
        api_rate_limited(call, wait, "login attempts from this address");
        return;
    }
    cJSON *body = read_credentials(call, &user, &pass);
    if (body == NULL) {
        return;
    }
    struct pg_conn *c = NULL;
    struct pg_result *res = NULL;
    struct pg_error err = {0};
    size_t i = 0;
    for (; user[i] && i + 1 < sizeof(name); i++) {
        name[i] = (char)tolower((unsigned char)user[i]);
    }
    name[i] = '\0';
    int64_t delay_ms = 0;
    bool user_taken = false;
    if ((c = api_pg(call)) == NULL ||
        login_limits(call, c, addr, name, &delay_ms, &user_taken) != 0) {
        goto out;
    }
    const char *params[] = {user};
    if (pg_exec(c, &user_by_name, 1, params, &res, &err) != 0) {
        api_pg_problem(call, &err);
        goto out;
    }
    /* No connection is held while sleeping or hashing. */
    pg_release(gw->pg, c);
    c = NULL;
    if (delay_ms > 0 && login_delay(call, delay_ms) != 0) {
        goto out;
    }
    bool known = pg_rows(res) == 1;
    /* Unknown users are verified against a dummy hash: same work, same answer. */
    int rc = passwd_verify(gw->passwd, known ? pg_text(res, 0, BYNAME_COL_HASH) : NULL, pass,
                           strlen(pass));
    if (rc == PASSWD_BUSY) {
        gwmetrics_count(gw->metrics, M_LOGIN_BUSY, 1);
        hashing_busy(call);
        goto out;
    }
    if ((c = api_pg(call)) == NULL) {
        goto out;
    }
    if (rc != PASSWD_OK) {
        gwmetrics_count(gw->metrics, M_LOGIN_FAILED, 1);
        record_failed_login(gw, c, res, user, known ? "wrong_password" : "unknown_user");
        http_problem(call->req, 401, "invalid_credentials", "wrong username or password", NULL);
        goto out;
    }
    if (pg_bool(res, 0, BYNAME_COL_DISABLED)) {
        record_failed_login(gw, c, res, user, "disabled");
        http_problem(call->req, 403, "account_disabled", "this account is disabled", NULL);
        goto out;
    }
    bool need = passwd_needs_rehash(gw->passwd, pg_text(res, 0, BYNAME_COL_HASH)) &&
                passwd_hash(gw->passwd, pass, strlen(pass), rehash) == PASSWD_OK;
    struct login l = {gw, res, need ? rehash : NULL, token, csrf, 0};
    if (audit_commit(c, gw->relay, apply_login, &l, &err) < 0) {
        api_pg_problem(call, &err);
        goto out;
    }
    gwmetrics_count(gw->metrics, M_LOGIN_OK, 1);
    login_forgive(gw, c, addr, name, user_taken);
    session_reply(call, 200, pg_text(res, 0, BYNAME_COL_ID), pg_text(res, 0, BYNAME_COL_NAME),
                  pg_text(res, 0, BYNAME_COL_ROLE), token, csrf, l.expires);
out:
    util_wipe(rehash, sizeof(rehash));
    pg_result_free(res);
    pg_release(gw->pg, c);
    wipe_password(body);
}

/* Revokes the calling session, with user.logged_out. */
static int
apply_logout(struct pg_conn *c, void *arg, char **event, struct pg_error *err)
{
    struct api_call *call = arg;
    if (auth_session_revoke(call->gw, c, &call->who, err) != 0) {
        return -1;
    }
    char msg[128];
    snprintf(msg, sizeof(msg), "%s logged out", call->who.username);
    *event = user_event("user.logged_out", call->who.id, call->who.username,
                        call->who.admin ? "admin" : "user", msg, NULL);
    return 1;
}

void
api_auth_logout(struct api_call *call)
{
    struct gw *gw = call->gw;
    struct pg_error err = {0};
    struct pg_conn *c = api_pg(call);
    if (c == NULL) {
        return;
    }
    char cookies[512];
    if (audit_commit(c, gw->relay, apply_logout, call, &err) < 0) {
        api_pg_problem(call, &err);
    } else {
        auth_cookie_headers(gw, NULL, NULL, cookies, sizeof(cookies));
        http_reply(call->req, 204, "application/json", cookies, "", 0);
    }
    pg_release(gw->pg, c);
}

void
api_user_me(struct api_call *call)
{
    struct pg_error err;
    struct pg_result *res = NULL;
    struct pg_conn *c = api_pg(call);
    if (c == NULL) {
        return;
    }
    const char *params[] = {call->who.id};
    if (pg_exec(c, &me, 1, params, &res, &err) != 0) {
        api_pg_problem(call, &err);
    } else if (pg_rows(res) != 1) {
        http_problem(call->req, 404, "not_found", "no such user", NULL);
    } else {
        cJSON *b = cJSON_CreateObject();
        cJSON_AddNumberToObject(b, "id", (double)pg_int(res, 0, ME_COL_ID));
        cJSON_AddStringToObject(b, "username", pg_text(res, 0, ME_COL_NAME));
        cJSON_AddStringToObject(b, "role", pg_text(res, 0, ME_COL_ROLE));
        cJSON_AddNumberToObject(b, "created_at", (double)pg_int(res, 0, ME_COL_CREATED));
        cJSON_AddNumberToObject(b, "balance", (double)pg_int(res, 0, ME_COL_BALANCE));
        api_reply(call, 200, b, NULL);
    }
    pg_result_free(res);
    pg_release(call->gw->pg, c);
}
