/* The gateway role's key table. */
#include "gateway_conf.h"

#include <stddef.h>

#define K(name, type, def, lo, hi, check, flags, help)                                             \
    {                                                                                              \
#name, type, def, offsetof(struct gateway_conf, name), lo, hi, check, flags, help          \
    }

static const struct conf_key gateway_keys[] = {
    K(http_listen, CONF_STR, "127.0.0.1:8080", 0, 0, conf_check_hostport, 0,
      "Where the gateway serves the HTTP API, /livez and a bare /readyz status (for load "
      "balancers; the reasons and /metrics are on gateway_health_listen only)."),
    K(gateway_health_listen, CONF_STR, "127.0.0.1:9100", 0, 0, conf_check_hostport, 0,
      "HTTP port of the gateway for /livez, /readyz (with the reason) and /metrics; keep it "
      "off the public network."),
    K(http_threads, CONF_INT, "16", 2, 4096, NULL, 0,
      "HTTP worker threads running handlers (PostgreSQL, argon2, RPC); open connections cost "
      "none: one event-loop thread reads and writes them all. About pg_pool_size: more workers "
      "than connections only wait for one (make bench: 16 served 64 clients' claims faster "
      "than 64 on 2 cores)."),
    K(http_request_timeout_ms, CONF_INT, "30000", 100, 600000, NULL, 0,
      "A response write that makes no progress this long closes the connection; a request "
      "that waited this long for a free worker gets 503."),
    K(http_read_timeout_ms, CONF_INT, "5000", 100, 600000, NULL, 0,
      "A request's headers and body must arrive within this (however slowly the bytes come); "
      "also how long an idle keep-alive connection stays open."),
    K(http_max_header_bytes, CONF_INT, "16384", 1024, 1048576, NULL, 0,
      "Largest request line plus headers; larger ones get 431 (over twice this, the connection "
      "is closed with a plain 400)."),
    K(http_max_conns, CONF_INT, "4096", 16, 1000000, NULL, 0,
      "Open HTTP connections in total (lowered to fit the descriptor limit); the last eighth is "
      "kept for client addresses holding fewer than two."),
    K(http_max_conns_per_addr, CONF_INT, "32", 1, 1000000, NULL, 0,
      "Open HTTP connections per client address (an IPv6 /64 counts as one); more are closed at "
      "once. Not applied with trust_forwarded_for, where every connection is the proxy's."),
    K(max_body_bytes, CONF_INT, "1048576", 1024, 64 << 20, NULL, 0,
      "Largest accepted request body; larger ones get 413 before they are read."),
    K(chance_addr, CONF_STR, "127.0.0.1:4001", 0, 0, conf_check_hostport_list, 0,
      "The chance instances the gateway calls (NestJS TCP): host:port, a comma-separated list, "
      "or a name with several addresses (each is an instance; names are resolved again every "
      "5 s). Each call goes to the next connected instance."),
    K(logger_addr, CONF_STR, "127.0.0.1:4002", 0, 0, conf_check_hostport_list, 0,
      "The logger instances the gateway calls, as chance_addr."),
    K(rpc_timeout_ms, CONF_INT, "3000", 50, 600000, NULL, 0,
      "Deadline of a claim and of reads from chance; a claim past it answers 202 pending."),
    K(logger_timeout_ms, CONF_INT, "10000", 100, 600000, NULL, 0,
      "Deadline of calls to the logger (audit delivery and reports)."),
    K(postgres_url, CONF_STR, "postgresql://chanced@127.0.0.1:5432/chanced", 0, 0,
      conf_check_url_postgres, CONF_SECRET, "PostgreSQL holding users, wallets and the ledger."),
    K(pg_pool_size, CONF_INT, "16", 1, 1000, NULL, 0,
      "PostgreSQL connections shared by the HTTP workers."),
    K(pg_acquire_timeout_ms, CONF_INT, "5000", 10, 600000, NULL, 0,
      "Wait for a free PostgreSQL connection before answering 503."),
    K(pg_connect_timeout_s, CONF_INT, "5", 1, 600, NULL, 0,
      "Deadline for opening a PostgreSQL connection."),
    K(pg_statement_timeout_ms, CONF_INT, "10000", 100, 3600000, NULL, 0,
      "Server-side statement_timeout of the gateway's connections (with pg_prepared)."),
    K(pg_prepared, CONF_BOOL, "true", 0, 0, NULL, 0,
      "Named prepared statements, with statement_timeout and enable_seqscan=off set at "
      "connect (a plan made while a table was small keeps using its indexes). Set false behind a "
      "transaction pooler (PgBouncer pool_mode=transaction): unnamed statements, no startup "
      "options; set the timeout on the role (ALTER ROLE ... SET statement_timeout)."),
    K(token_ttl_s, CONF_INT, "86400", 1, 2592000, NULL, 0,
      "Lifetime of a session token (bearer or cookie)."),
    K(auth_cache_ms, CONF_INT, "1000", 0, 60000, NULL, 0,
      "Trust a verified token this long without asking PostgreSQL (0: always ask). Logout and "
      "disable take effect at once on this instance, after at most this long on others; expiry "
      "is always exact."),
    K(cookie_secure, CONF_BOOL, "true", 0, 0, NULL, 0,
      "Mark the session cookie Secure (browsers still accept it on http://localhost)."),
    K(argon2_memory_kib, CONF_INT, "19456", 19456, 4194304, NULL, 0,
      "argon2id memory per hash in KiB (OWASP minimum 19456)."),
    K(argon2_iterations, CONF_INT, "2", 2, 100, NULL, 0, "argon2id passes (OWASP minimum 2)."),
    K(argon2_parallelism, CONF_INT, "1", 1, 64, NULL, 0, "argon2id lanes."),
    K(argon2_max_inflight, CONF_INT, "2", 1, 256, NULL, 0,
      "Password hashes computed at once; bounds memory and CPU spent on logins."),
    K(argon2_queue_ms, CONF_INT, "100", 10, 600000, NULL, 0,
      "Wait for a hashing slot before answering 503 with Retry-After (short: a waiting login "
      "holds an HTTP worker)."),
    K(argon2_queue_max, CONF_INT, "4", 0, 4096, NULL, 0,
      "Logins and signups that may wait for a hashing slot at once; more get 503 at once."),
    K(login_rate_ip, CONF_INT, "60", 1, 10000000, NULL, 0,
      "Login attempts per minute from one client address (an IPv6 client: its /64), counted "
      "across all gateways of the database; 429 beyond."),
    K(login_burst_ip, CONF_INT, "10", 1, 10000000, NULL, 0,
      "Login attempts one client address may make at once before login_rate_ip applies."),
    K(login_fail_rate, CONF_INT, "10", 1, 1000000, NULL, 0,
      "Failed logins per minute for one username from one client address, across all gateways; "
      "429 beyond for that address only. A success from the address clears its count."),
    K(login_rate_user, CONF_INT, "10", 1, 1000000, NULL, 0,
      "Failed logins per minute for one username from all addresses, across all gateways; "
      "beyond it logins for that name are slowed (login_user_delay_ms), not refused."),
    K(login_user_delay_ms, CONF_INT, "2000", 0, 60000, NULL, 0,
      "Longest delay of a login for a username past login_rate_user."),
    K(signup_rate_ip, CONF_INT, "60", 1, 10000000, NULL, 0,
      "Signups per minute from one client address, across all gateways (429 beyond)."),
    K(claim_rate, CONF_INT, "5", 1, 1000000, NULL, 0, "Sustained claims per second per user."),
    K(claim_burst, CONF_INT, "10", 1, 1000000, NULL, 0, "Claims one user may make at once."),
    K(claim_secret, CONF_STR, "", 0, 0, NULL, CONF_SECRET,
      "Key that tags claim ids so the reconciler credits only claims a gateway issued; the same "
      "on every gateway, never given to chance. Empty: a random key kept in the database."),
    K(trust_forwarded_for, CONF_BOOL, "false", 0, 0, NULL, 0,
      "Take the client address from the right-most X-Forwarded-For entry (across all lines) "
      "when it is a valid IPv4/IPv6 address, else the socket's; only behind a proxy that "
      "appends it."),
    K(reconcile_interval_ms, CONF_INT, "1000", 50, 3600000, NULL, 0,
      "How often the reconciler reads chance's assignment log."),
    K(reconcile_grace_ms, CONF_INT, "5000", 0, 3600000, NULL, 0,
      "Assignments younger than this are left to the request that made them."),
    K(reconcile_verify_delay_ms, CONF_INT, "10000", 0, 86400000, NULL, 0,
      "Credits this old are checked against Redis (and Redis repaired if it forgot them); "
      "longer than Redis can lose (appendfsync, replica lag)."),
    K(lease_ttl_ms, CONF_INT, "10000", 1000, 600000, NULL, 0,
      "The reconciler and the outbox housekeeping run on one gateway at a time; another takes "
      "over this long after the holder stops renewing."),
    K(pending_settle_ms, CONF_INT, "10000", 100, 86400000, NULL, 0,
      "A claim still pending after this long is driven to a final state by the reconciler."),
    K(outbox_interval_ms, CONF_INT, "500", 10, 600000, NULL, 0,
      "How often the audit relay looks for undelivered events when idle."),
    K(outbox_batch, CONF_INT, "500", 1, 500, NULL, 0, "Audit events per log.append call."),
    K(outbox_retention_s, CONF_INT, "0", 0, 31536000, NULL, 0,
      "0: an audit event leaves the outbox in the transaction that records its delivery (no "
      "second write). Above 0: delivered events stay in PostgreSQL, marked, this long (e.g. to "
      "send them again after restoring the audit store from a backup), at the cost of an UPDATE "
      "per event. Parked (refused) events stay at least 7 days either way."),
};

const struct conf_module gateway_conf_module = {
    "gateway", gateway_keys, ARRAY_SIZE(gateway_keys), sizeof(struct gateway_conf), NULL,
};
