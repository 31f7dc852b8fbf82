/*
 * The chance role's Lua scripts. Each touches the keys of one slot only (a category's, or the
 * global "{g}" ones), declares every key it touches in KEYS (so Redis Cluster routes it), does
 * every check before its first write (Redis does not roll scripts back), never fails on odd
 * data it finds (it reports it), and is called with EVALSHA (redis.c reloads on NOSCRIPT).
 *
 * A code's record is a field of the category's "codes" hash, a small JSON object:
 *   {"r": reward, "s": "available"}  or
 *   {"r": reward, "s": "assigned", "u": user id, "n": username, "c": claim id, "t": ms}
 */
#ifndef CHANCED_CHANCE_SCRIPTS_H
#define CHANCED_CHANCE_SCRIPTS_H

enum script_id {
    SCRIPT_CLAIM,        /* pick, check, assign, record, audit: the heart of guarantee 1 */
    SCRIPT_RELEASE,      /* give a code back if it is still owned by the claim */
    SCRIPT_REASSIGN,     /* repair from the ledger: a code belongs to the claim PostgreSQL says */
    SCRIPT_UPDATE,       /* change a category's settings with an audit event */
    SCRIPT_CAT_INIT,     /* create a generating category's meta unless it exists */
    SCRIPT_LOAD,         /* write a chunk of new codes into a category, up to its target */
    SCRIPT_CAT_FINISH,   /* a full category becomes ready */
    SCRIPT_BATCH_CREATE, /* record a batch once per batch key */
    SCRIPT_BATCH_LEASE,  /* renew or take over the lease of a batch being generated */
    SCRIPT_BATCH_FINISH, /* index the categories, close the batch, audit it */
    SCRIPT_BATCH_FAIL,   /* close the batch as failed, audit it */
    SCRIPT_COUNT
};

/* The Lua source of each script (static strings). */
extern const char *const script_sources[SCRIPT_COUNT];

#endif
