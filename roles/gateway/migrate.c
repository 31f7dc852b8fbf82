/*
 * The schema, as numbered migrations. Never edit a released migration: add a new one. The
 * constraints here are the last line of defence for money (see
 * docs/architecture.md#postgresql-schema): a bug in C must not be able to credit a code twice or
 * drive a balance negative. Identifiers (digests, claim ids, codes) are COLLATE "C": bytewise is
 * their meaning, and much cheaper than a linguistic collation on the hottest indexes.
 */
#include "migrate.h"

#include <stdio.h>

#include "log.h"
#include "pg.h"

#define MIGRATE_LOCK_KEY "7264452801" /* pg_advisory_lock key, arbitrary but fixed */

struct migration {
    int version;      /* strictly increasing */
    const char *name; /* short description */
    const char *sql;  /* applied in one transaction */
};

static const struct migration migrations[] = {
    {1, "users, wallets, sessions, claims, ledger, outbox, reconciler cursors, meta",
     "CREATE TABLE users ("
     "  id            BIGSERIAL PRIMARY KEY,"
     "  username      TEXT NOT NULL CHECK (char_length(username) BETWEEN 1 AND 64),"
     "  password_hash TEXT NOT NULL CHECK (password_hash LIKE '$argon2id$%'),"
     "  role          TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),"
     "  disabled      BOOLEAN NOT NULL DEFAULT false,"
     "  created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),"
     "  updated_at    TIMESTAMPTZ NOT NULL DEFAULT now());"
     "CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));"

     "CREATE TABLE wallets ("
     "  user_id    BIGINT PRIMARY KEY REFERENCES users (id),"
     "  balance    BIGINT NOT NULL DEFAULT 0 CONSTRAINT wallets_balance_nonnegative"
     "             CHECK (balance >= 0),"
     "  updated_at TIMESTAMPTZ NOT NULL DEFAULT now());"

     /* Tokens are stored only as SHA-256 digests: a database leak yields no usable token. */
     "CREATE TABLE sessions ("
     "  id         BIGSERIAL PRIMARY KEY,"
     "  token_hash TEXT COLLATE \"C\" NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),"
     "  csrf_hash  TEXT COLLATE \"C\" NOT NULL CHECK (csrf_hash ~ '^[0-9a-f]{64}$'),"
     "  user_id    BIGINT NOT NULL REFERENCES users (id),"
     "  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
     "  expires_at TIMESTAMPTZ NOT NULL,"
     "  revoked_at TIMESTAMPTZ);"
     "CREATE INDEX sessions_user_live ON sessions (user_id) WHERE revoked_at IS NULL;"

     /* One row per claim id: the idempotency record and the user's view of the claim. */
     "CREATE TABLE claims ("
     "  seq        BIGSERIAL UNIQUE,"
     "  claim_id   TEXT COLLATE \"C\" PRIMARY KEY CHECK (claim_id ~ '^[A-Za-z0-9_-]{1,64}$'),"
     "  user_id    BIGINT NOT NULL REFERENCES users (id),"
     "  category   BIGINT NOT NULL CHECK (category > 0),"
     "  status     TEXT NOT NULL CHECK (status IN ('pending', 'credited', 'failed')),"
     "  code       TEXT COLLATE \"C\" UNIQUE,"
     "  reward     BIGINT CHECK (reward > 0),"
     "  error      TEXT,"
     "  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
     "  updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
     "  CONSTRAINT claims_credited_has_code"
     "    CHECK ((status = 'credited') = (code IS NOT NULL AND reward IS NOT NULL)));"
     "CREATE INDEX claims_user_seq ON claims (user_id, seq);"
     "CREATE INDEX claims_pending ON claims (updated_at) WHERE status = 'pending';"

     /* The ledger of record: one row per credited code, never two for a claim or a code. */
     "CREATE TABLE ledger ("
     "  id            BIGSERIAL PRIMARY KEY,"
     "  user_id       BIGINT NOT NULL REFERENCES users (id),"
     "  claim_id      TEXT COLLATE \"C\" NOT NULL CONSTRAINT ledger_claim_id_key UNIQUE,"
     "  code          TEXT COLLATE \"C\" NOT NULL CONSTRAINT ledger_code_key UNIQUE,"
     "  category      BIGINT NOT NULL CHECK (category > 0),"
     "  amount        BIGINT NOT NULL CONSTRAINT ledger_amount_positive CHECK (amount > 0),"
     "  balance_after BIGINT NOT NULL CHECK (balance_after >= 0),"
     "  source        TEXT NOT NULL CHECK (source IN ('request', 'reconciler')),"
     "  created_at    TIMESTAMPTZ NOT NULL DEFAULT now());"
     "CREATE INDEX ledger_user_id ON ledger (user_id, id);"

     /* Audit events written with the change they describe; the relay delivers them. */
     "CREATE TABLE outbox ("
     "  id           BIGSERIAL PRIMARY KEY,"
     "  event        TEXT NOT NULL,"
     "  created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),"
     "  delivered_at TIMESTAMPTZ,"
     "  rejected     TEXT);"
     "CREATE INDEX outbox_undelivered ON outbox (id) WHERE delivered_at IS NULL;"
     "CREATE INDEX outbox_delivered_at ON outbox (delivered_at) WHERE delivered_at IS NOT NULL;"

     /* Outbox ids restart in every database; this prefix keeps audit _ids unique across
      * databases that share one logger (and across test runs). */
     "CREATE TABLE gateway_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
     "INSERT INTO gateway_meta VALUES ('event_namespace',"
     "  substr(replace(gen_random_uuid()::text, '-', ''), 1, 12));"

     "CREATE TABLE reconcile_cursors ("
     "  category   BIGINT PRIMARY KEY,"
     "  cursor     TEXT NOT NULL,"
     "  updated_at TIMESTAMPTZ NOT NULL DEFAULT now());"},

    /* PostgreSQL, not Redis, is the record of how many codes of a category a user holds: the
     * credit statement raises the count only below the category's limit (claims.c), so a Redis
     * that forgot its last writes cannot let a user be paid past the limit. */
    {2, "per-user claim counts per category",
     "CREATE TABLE claim_counts ("
     "  user_id  BIGINT NOT NULL REFERENCES users (id),"
     "  category BIGINT NOT NULL CHECK (category > 0),"
     "  n        INT NOT NULL CHECK (n >= 0),"
     "  PRIMARY KEY (user_id, category));"
     "INSERT INTO claim_counts (user_id, category, n)"
     "  SELECT user_id, category, count(*) FROM ledger GROUP BY user_id, category;"},

    /* One gateway at a time runs the reconciler and the outbox housekeeping (lease.c). */
    {3, "leases for work that runs on one gateway at a time",
     "CREATE TABLE leases ("
     "  name       TEXT PRIMARY KEY,"
     "  holder     TEXT NOT NULL,"
     "  taken_at   TIMESTAMPTZ NOT NULL DEFAULT now(),"
     "  expires_at TIMESTAMPTZ NOT NULL);"},

    /* The key that tags claim ids (claimid.h) when no claim_secret is configured: random per
     * database, so every gateway of this database shares it and chance never sees it. */
    {4, "claim id secret",
     "INSERT INTO gateway_meta VALUES ('claim_secret', encode(sha256(convert_to("
     "  gen_random_uuid()::text || gen_random_uuid()::text || clock_timestamp()::text,"
     "  'UTF8')), 'hex')) ON CONFLICT (key) DO NOTHING;"},

    /* Login and signup token buckets shared by every gateway of the database (api_auth.c), so N
     * gateways do not give an attacker N budgets. UNLOGGED: no WAL for one upsert per attempt;
     * a crash empties it, which only forgives recent attempts. Rows are pruned once full. */
    {5, "login and signup rate limits shared by the gateways",
     "CREATE UNLOGGED TABLE rate_limits ("
     "  key    TEXT PRIMARY KEY,"
     "  tokens DOUBLE PRECISION NOT NULL,"
     "  ok     BOOLEAN NOT NULL,"
     "  at     TIMESTAMPTZ NOT NULL);"},

    /* Two indexes every credit wrote and no query read: claims are found by claim id (the
     * primary key) or by user in seq order (claims_user_seq), never by seq or code alone, and
     * a code is credited once by ledger_code_key, not by the claims row. */
    {6, "drop the unread unique indexes of claims (seq, code)",
     "ALTER TABLE claims DROP CONSTRAINT claims_seq_key, DROP CONSTRAINT claims_code_key;"},
};

int
migrate_latest(void)
{
    return migrations[ARRAY_SIZE(migrations) - 1].version;
}

/*
 * Every step holds the migration lock for its own transaction only (pg_advisory_xact_lock), so
 * it works behind a transaction pooler, where a session lock could be taken on one server
 * connection and released on another.
 */
#define LOCK_SQL "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK_KEY ")"

static const struct pg_stmt applied = {"migrate_applied",
                                       "SELECT 1 FROM schema_migrations WHERE version = $1"};
static const struct pg_stmt record = {
    "migrate_record", "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"};

static int
current_version(struct pg_conn *c, int *version, struct pg_error *err)
{
    struct pg_result *res = NULL;
    if (pg_exec_sql(c, "BEGIN", err) != 0 || pg_exec_sql(c, LOCK_SQL, err) != 0 ||
        pg_exec_sql(c,
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    "  version INT PRIMARY KEY, name TEXT NOT NULL,"
                    "  applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                    err) != 0 ||
        pg_query_sql(c, "SELECT coalesce(max(version), 0) FROM schema_migrations", &res, err) !=
            0 ||
        pg_exec_sql(c, "COMMIT", err) != 0) {
        pg_result_free(res);
        pg_rollback(c);
        return -1;
    }
    *version = (int)pg_int(res, 0, 0);
    pg_result_free(res);
    return 0;
}

/* Applies m unless another process did meanwhile (checked under the lock). */
static int
apply_one(struct pg_conn *c, const struct migration *m, struct pg_error *err)
{
    char version[16];
    snprintf(version, sizeof(version), "%d", m->version);
    const char *params[] = {version, m->name};
    struct pg_result *res = NULL;
    if (pg_exec_sql(c, "BEGIN", err) != 0 || pg_exec_sql(c, LOCK_SQL, err) != 0 ||
        pg_exec(c, &applied, 1, params, &res, err) != 0) {
        pg_rollback(c);
        return -1;
    }
    bool done = pg_rows(res) > 0;
    pg_result_free(res);
    if ((!done &&
         (pg_exec_sql(c, m->sql, err) != 0 || pg_exec(c, &record, 2, params, NULL, err) != 0)) ||
        pg_exec_sql(c, "COMMIT", err) != 0) {
        pg_rollback(c);
        return -1;
    }
    if (!done) {
        log_info("migration_applied", "version=%d name=\"%s\"", m->version, m->name);
    }
    return 0;
}

int
migrate_apply(struct pg_pool *pool)
{
    struct pg_error err = {0};
    int rc = -1, version = 0;
    struct pg_conn *c = pg_acquire(pool, 30000, &err);
    if (c == NULL) {
        log_error("migrate_failed", "reason=\"%s\"", err.message);
        return -1;
    }
    if (current_version(c, &version, &err) != 0) {
        goto fail;
    }
    if (version > migrate_latest()) {
        log_error("migrate_refused",
                  "database_version=%d binary_version=%d "
                  "reason=\"the database is newer than this binary\"",
                  version, migrate_latest());
        rc = -2;
        goto fail;
    }
    for (size_t i = 0; i < ARRAY_SIZE(migrations); i++) {
        if (migrations[i].version > version && apply_one(c, &migrations[i], &err) != 0) {
            log_error("migration_failed", "version=%d reason=\"%s\"", migrations[i].version,
                      err.message);
            goto fail;
        }
    }
    log_info("schema_ready", "version=%d", migrate_latest());
    rc = 0;
fail:
    if (rc == -1 && err.message[0]) {
        log_error("migrate_failed", "reason=\"%s\"", err.message);
    }
    pg_release(pool, c);
    return rc;
}
