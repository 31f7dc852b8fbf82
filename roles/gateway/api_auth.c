/* Accounts: signup, login, logout, /me. Passwords never leave this file unwiped. */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
static const struct pg_stmt wallet_insert = {"auth_wallet_insert",
                                             "INSERT INTO wallets (user_id) VALUES ($1)"};
static const struct pg_stmt user_by_name = {
    "auth_user_by_name", "SELECT id, username, password_hash, role, disabled FROM users"
                         " WHERE lower(username) = lower($1)"};
static const struct pg_stmt user_rehash = {
    "auth_user_rehash", "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1"};
static const struct pg_stmt me = {
    "auth_me",
    "SELECT u.id, u.username, u.role, (extract(epoch FROM u.created_at) * 1000)::bigint,"
    " coalesce(w.balance, 0) FROM users u LEFT JOIN wallets w ON w.user_id = u.id WHERE u.id = $1"};

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

void
api_auth_signup(struct api_call *call)
{
    struct gw *gw = call->gw;
    const char *user = NULL, *pass = NULL;
    char hash[PASSWD_ENCODED_MAX], token[AUTH_TOKEN_LEN + 1], csrf[AUTH_TOKEN_LEN + 1];
    int wait = ratelimit_take(gw->rl_signup_ip, http_client_addr(call->req));
    if (wait > 0) {
        api_rate_limited(call, wait, "signups from this address");
        return;
    }
    cJSON *body = read_credentials(call, &user, &pass);
    if (body == NULL) {
        return;
    }
    struct pg_conn *c = NULL;
    struct pg_result *res = NULL;
    struct pg_error err = {0};
    char *event = NULL;
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
    int rc = passwd_hash(gw->passwd, pass, strlen(pass), hash);
    if (rc != PASSWD_OK) {
        http_problem(call->req, 503, "busy", "password hashing is saturated; retry",
                     "Retry-After: 1\r\n");
        goto out;
    }
    if ((c = api_pg(call)) == NULL) {
        goto out;
    }
    const char *p1[] = {user, hash};
    int64_t expires = 0;
    if (pg_exec_sql(c, "BEGIN", &err) != 0 || pg_exec(c, &user_insert, 2, p1, &res, &err) != 0) {
        goto fail;
    }
    const char *p2[] = {pg_text(res, 0, 0)};
    char msg[128];
    snprintf(msg, sizeof(msg), "%s signed up", pg_text(res, 0, 1));
    event = user_event("user.signed_up", pg_text(res, 0, 0), pg_text(res, 0, 1), "user", msg, NULL);
    if (pg_exec(c, &wallet_insert, 1, p2, NULL, &err) != 0 ||
        auth_session_create(gw, c, pg_int(res, 0, 0), token, csrf, &expires, &err) != 0 ||
        audit_insert(c, event, &err) != 0 || pg_exec_sql(c, "COMMIT", &err) != 0) {
        goto fail;
    }
    gw_outbox_kick(gw);
    session_reply(call, 201, pg_text(res, 0, 0), pg_text(res, 0, 1), pg_text(res, 0, 2), token,
                  csrf, expires);
    goto out;
fail:
    pg_rollback(c);
    if (err.cls == PG_ERR_UNIQUE) {
        http_problem(call->req, 409, "username_taken", "that username is taken", NULL);
    } else {
        api_pg_problem(call, &err);
    }
out:
    util_wipe(hash, sizeof(hash));
    free(event);
    pg_result_free(res);
    pg_release(gw->pg, c);
    wipe_password(body);
}

/* Writes a login.failed event (own transaction); failures are logged, not fatal to the answer. */
static void
record_failed_login(struct gw *gw, struct pg_conn *c, const struct pg_result *res, const char *user,
                    const char *reason)
{
    char msg[160];
    struct pg_error err;
    snprintf(msg, sizeof(msg), "failed login for %s (%s)", user, reason);
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "reason", reason);
    cJSON *subject = cJSON_CreateObject();
    cJSON_AddStringToObject(subject, "username", user);
    if (res && pg_rows(res) == 1) {
        cJSON_AddStringToObject(subject, "user_id", pg_text(res, 0, 0));
    }
    char *event = audit_event("login.failed", NULL, subject, data, msg);
    if (audit_insert(c, event, &err) != 0) {
        log_warn("audit_failed", "type=login.failed reason=\"%s\"", err.message);
    } else {
        gw_outbox_kick(gw);
    }
    free(event);
}

static int
login_commit(struct gw *gw, struct pg_conn *c, const struct pg_result *res, const char *newhash,
             char *token, char *csrf, int64_t *expires, struct pg_error *err)
{
    const char *uid = pg_text(res, 0, 0), *name = pg_text(res, 0, 1);
    char msg[128];
    snprintf(msg, sizeof(msg), "%s logged in", name);
    char *event = user_event("login.succeeded", uid, name, pg_text(res, 0, 3), msg, NULL);
    const char *params[] = {uid, newhash};
    int rc = -1;
    if (pg_exec_sql(c, "BEGIN", err) == 0 &&
        (newhash == NULL || pg_exec(c, &user_rehash, 2, params, NULL, err) == 0) &&
        auth_session_create(gw, c, pg_int(res, 0, 0), token, csrf, expires, err) == 0 &&
        audit_insert(c, event, err) == 0 && pg_exec_sql(c, "COMMIT", err) == 0) {
        rc = 0;
        gw_outbox_kick(gw);
    } else {
        pg_rollback(c);
    }
    free(event);
    return rc;
}

void
api_auth_login(struct api_call *call)
{
    struct gw *gw = call->gw;
    const char *user = NULL, *pass = NULL;
    char key[96], token[AUTH_TOKEN_LEN + 1], csrf[AUTH_TOKEN_LEN + 1], rehash[PASSWD_ENCODED_MAX];
    int wait = ratelimit_take(gw->rl_login_ip, http_client_addr(call->req));
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
    for (; user[i] && i + 1 < sizeof(key); i++) {
        key[i] = (char)tolower((unsigned char)user[i]);
    }
    key[i] = '\0';
    if ((wait = ratelimit_take(gw->rl_login_user, key)) > 0) {
        api_rate_limited(call, wait, "login attempts for this user");
        goto out;
    }
    if ((c = api_pg(call)) == NULL) {
        goto out;
    }
    const char *params[] = {user};
    if (pg_exec(c, &user_by_name, 1, params, &res, &err) != 0) {
        api_pg_problem(call, &err);
        goto out;
    }
    bool known = pg_rows(res) == 1;
    /* Unknown users are verified against a dummy hash: same work, same answer. */
    int rc = passwd_verify(gw->passwd, known ? pg_text(res, 0, 2) : NULL, pass, strlen(pass));
    if (rc == PASSWD_BUSY) {
        http_problem(call->req, 503, "busy", "password hashing is saturated; retry",
                     "Retry-After: 1\r\n");
        goto out;
    }
    if (rc != PASSWD_OK) {
        gwmetrics_count(gw->metrics, M_LOGIN_FAILED, 1);
        record_failed_login(gw, c, res, user, known ? "wrong_password" : "unknown_user");
        http_problem(call->req, 401, "invalid_credentials", "wrong username or password", NULL);
        goto out;
    }
    if (pg_bool(res, 0, 4)) {
        record_failed_login(gw, c, res, user, "disabled");
        http_problem(call->req, 403, "account_disabled", "this account is disabled", NULL);
        goto out;
    }
    bool need = passwd_needs_rehash(gw->passwd, pg_text(res, 0, 2)) &&
                passwd_hash(gw->passwd, pass, strlen(pass), rehash) == PASSWD_OK;
    int64_t expires = 0;
    if (login_commit(gw, c, res, need ? rehash : NULL, token, csrf, &expires, &err) != 0) {
        api_pg_problem(call, &err);
        goto out;
    }
    gwmetrics_count(gw->metrics, M_LOGIN_OK, 1);
    session_reply(call, 200, pg_text(res, 0, 0), pg_text(res, 0, 1), pg_text(res, 0, 3), token,
                  csrf, expires);
out:
    util_wipe(rehash, sizeof(rehash));
    pg_result_free(res);
    pg_release(gw->pg, c);
    wipe_password(body);
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
    char msg[128], cookies[512];
    snprintf(msg, sizeof(msg), "%s logged out", call->who.username);
    char *event = user_event("user.logged_out", call->who.id, call->who.username,
                             call->who.admin ? "admin" : "user", msg, NULL);
    if (pg_exec_sql(c, "BEGIN", &err) != 0 || auth_session_revoke(gw, c, &call->who, &err) != 0 ||
        audit_insert(c, event, &err) != 0 || pg_exec_sql(c, "COMMIT", &err) != 0) {
        pg_rollback(c);
        api_pg_problem(call, &err);
    } else {
        gw_outbox_kick(gw);
        auth_cookie_headers(gw, NULL, NULL, cookies, sizeof(cookies));
        http_reply(call->req, 204, "application/json", cookies, "", 0);
    }
    free(event);
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
        cJSON_AddNumberToObject(b, "id", (double)pg_int(res, 0, 0));
        cJSON_AddStringToObject(b, "username", pg_text(res, 0, 1));
        cJSON_AddStringToObject(b, "role", pg_text(res, 0, 2));
        cJSON_AddNumberToObject(b, "created_at", (double)pg_int(res, 0, 3));
        cJSON_AddNumberToObject(b, "balance", (double)pg_int(res, 0, 4));
        api_reply(call, 200, b, NULL);
    }
    pg_result_free(res);
    pg_release(call->gw->pg, c);
}
