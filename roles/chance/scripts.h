/*
 * The chance role's Lua scripts. Each touches the keys of one category only (one hash-tag slot),
 * does every check before its first write (Redis does not roll scripts back), and is called with
 * EVALSHA (redis.c reloads on NOSCRIPT).
 */
#ifndef CHANCED_CHANCE_SCRIPTS_H
#define CHANCED_CHANCE_SCRIPTS_H

enum script_id {
    SCRIPT_CLAIM,   /* pick, check, assign, record, audit: the heart of guarantee 1 */
    SCRIPT_RESERVE, /* HSETNX a chunk of new codes into the global index; returns collisions */
    SCRIPT_LOAD,    /* create the code hashes and free-set entries of a reserved chunk */
    SCRIPT_UPDATE,  /* change a category's settings with an audit event */
    SCRIPT_RELEASE, /* give a code back if it is still owned by the claim */
    SCRIPT_COUNT
};

/* The Lua source of each script (static strings). */
extern const char *const script_sources[SCRIPT_COUNT];

#endif
