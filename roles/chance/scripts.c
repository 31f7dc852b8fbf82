/* Lua sources of the chance scripts (scripts.h). Keys follow "chance:{c<id>}:<what>" (chance.h). */
#include "scripts.h"

/* Shared Lua helpers, prepended to every script. */
#define LUA_PRELUDE                                                                                                                                      \
    "local function now_ms() local t = redis.call('TIME');"                                                                                              \
    " return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end\n"                                                                            \
    "local function toman(n) local s = string.format('%d', n);"                                                                                          \
    " local r = s:reverse():gsub('(%d%d%d)', '%1,'):reverse();"                                                                                          \
    " if r:sub(1, 1) == ',' then r = r:sub(2) end return r end\n"                                                                                        \
    "local function short(code) if #code > 6 then return code:sub(1, 6) .. '\\226\\128\\166' end"                                                        \
    " return code end\n" /* A code's record, or nil when it is missing or not a record (damaged data). */                                                \
    "local function rec(key, code) local v = redis.call('HGET', key, code)\n"                                                                            \
    " if not v then return nil end\n"                                                                                                                    \
    " local ok, d = pcall(cjson.decode, v)\n"                                                                                                            \
    " if ok and type(d) == 'table' and tonumber(d.r) then return d end return nil end\n"                                                                 \
    "local function users_add(key, uid, n) local v = tonumber(redis.call('HINCRBY', key, uid, "                                                          \
    "n))\n"                                                                                                                                              \
    " if v <= 0 then redis.call('HDEL', key, uid) end end\n"                                                                                             \
    "local function byuser_add(key, uid, code) local mine = redis.call('HGET', key, uid)\n"                                                              \
    " if not mine then redis.call('HSET', key, uid, code) return end\n"                                                                                  \
    " for c in mine:gmatch('%S+') do if c == code then return end end\n"                                                                                 \
    " redis.call('HSET', key, uid, mine .. ' ' .. code) end\n" /* log_add: appends to an assignment log, trimming entries older than minid ('' keeps) */ \
    "local function log_add(key, minid, ...) if minid ~= '' then"                                                                                        \
    " return redis.call('XADD', key, 'MINID', '~', minid, '*', ...) end"                                                                                 \
    " return redis.call('XADD', key, '*', ...) end\n"                                                                                                    \
    "local function byuser_remove(key, uid, code) local kept = {}\n"                                                                                     \
    " for c in (redis.call('HGET', key, uid) or ''):gmatch('%S+') do"                                                                                    \
    " if c ~= code then kept[#kept + 1] = c end end\n"                                                                                                   \
    " if #kept > 0 then redis.call('HSET', key, uid, table.concat(kept, ' '))"                                                                           \
    " else redis.call('HDEL', key, uid) end end\n"

/*
 * KEYS: 1 meta, 2 free, 3 codes, 4 claims, 5 users, 6 events, 7 log, 8 byuser
 * ARGV: 1 claim_id, 2 user_id, 3 username, 4 category id, 5 log retention: oldest entry id
 *       to keep ('' keeps all)
 * Returns {1, code, reward, assigned_at, replay, per_user_limit} or {0, error_code}.
 */
static const char claim_lua[] = LUA_PRELUDE
    "local claim, uid, uname, cat = ARGV[1], ARGV[2], ARGV[3], ARGV[4]\n"
    "local m = redis.call('HMGET', KEYS[1], 'status', 'enabled', 'starts_at', 'ends_at',"
    " 'per_user_limit', 'ns')\n"
    "local limit = tonumber(m[5]) or 1\n"
    "local prev = redis.call('HGET', KEYS[4], claim)\n"
    "if prev then\n"
    "  local d = rec(KEYS[3], prev)\n"
    "  if not d or d.s ~= 'assigned' or d.c ~= claim then return {0, 'inconsistent'} end\n"
    "  return {1, prev, d.r, tonumber(d.t) or 0, 1, limit}\n"
    "end\n"
    "if not m[1] or m[1] ~= 'ready' then return {0, 'category_not_found'} end\n"
    "if m[2] ~= '1' then return {0, 'category_disabled'} end\n"
    "local now = now_ms()\n"
    "local s, e = tonumber(m[3]) or 0, tonumber(m[4]) or 0\n"
    "if (s > 0 and now < s) or (e > 0 and now >= e) then return {0, 'not_in_window'} end\n"
    "local count = tonumber(redis.call('HGET', KEYS[5], uid) or '0') or 0\n"
    "if count >= limit then return {0, 'user_limit_reached'} end\n"
    "local code, d\n"
    "for i = 1, 16 do\n"
    "  code = redis.call('SRANDMEMBER', KEYS[2])\n"
    "  if not code then return {0, 'category_exhausted'} end\n"
    "  d = rec(KEYS[3], code)\n"
    "  if d and d.s == 'available' then break end\n"
    /* A free entry without an available record can never be handed out (repaired away, or
     * damaged): it leaves the set, counted, and the pick goes on. */
    "  redis.call('SREM', KEYS[2], code)\n"
    "  redis.call('HINCRBY', KEYS[1], 'stale_free', 1)\n"
    "  code = nil\n"
    "end\n"
    "if not code then return {0, 'category_exhausted'} end\n"
    /* From here on only writes: every check above has passed. */
    "local reward = d.r\n"
    "redis.call('SREM', KEYS[2], code)\n"
    "redis.call('HSET', KEYS[3], code, cjson.encode({r = reward, s = 'assigned', u = uid,"
    " n = uname, c = claim, t = now}))\n"
    "redis.call('HSET', KEYS[4], claim, code)\n"
    "users_add(KEYS[5], uid, 1)\n"
    "redis.call('HINCRBY', KEYS[1], 'assigned', 1)\n"
    "redis.call('HINCRBY', KEYS[1], 'paid_out', reward)\n"
    "byuser_add(KEYS[8], uid, code)\n"
    /* The code is part of the id: after Redis forgot a claim, the same claim id can draw
     * another code, and that is another event. */
    "local ev = {_id = 'code.assigned:' .. (m[6] or 'x') .. ':c' .. cat .. ':' .. claim .. ':'"
    " .. code, ts = now, service = 'chance',"
    " type = 'code.assigned', actor = {id = uid, username = uname, role = 'user'},"
    " subject = {category = tonumber(cat), code = code, user_id = uid, username = uname,"
    " claim_id = claim}, data = {reward = reward},"
    " message = 'user ' .. uname .. ' received code ' .. short(code) .. ' (category ' .. cat .."
    " ', ' .. toman(reward) .. ' Toman)'}\n"
    "redis.call('XADD', KEYS[6], '*', 'e', cjson.encode(ev))\n"
    "local lid = log_add(KEYS[7], ARGV[5], 't', 'assigned', 'code', code, 'claim', claim,"
    " 'uid', uid, 'uname', uname, 'reward', reward, 'at', now)\n"
    "redis.call('HSET', KEYS[1], 'log_last', lid)\n"
    "return {1, code, reward, now, 0, limit}\n";

/*
 * KEYS: 1 meta, 2 free, 3 codes, 4 claims, 5 users, 6 events, 7 log, 8 byuser
 * ARGV: 1 claim_id, 2 category id, 3 reason, 4 nonce, 5 least count to leave the user ('' none),
 *       6 the code the caller means ('' = whichever the claim holds), 7 log retention (as claim)
 * Returns {1, code} or {0, error_code}.
 */
static const char release_lua[] = LUA_PRELUDE
    "local claim, cat = ARGV[1], ARGV[2]\n"
    "local code = redis.call('HGET', KEYS[4], claim)\n"
    "if not code then return {0, 'claim_not_found'} end\n"
    /* A claim that holds another code now (it drew again after a repair) keeps it. */
    "if ARGV[6] ~= '' and ARGV[6] ~= code then return {0, 'not_owned'} end\n"
    "local d = rec(KEYS[3], code)\n"
    "if not d or d.s ~= 'assigned' or d.c ~= claim then return {0, 'not_owned'} end\n"
    "local uid, uname, reward = d.u or '', d.n or '', d.r\n"
    "local now = now_ms()\n"
    "redis.call('HSET', KEYS[3], code, cjson.encode({r = reward, s = 'available'}))\n"
    "redis.call('SADD', KEYS[2], code)\n"
    "redis.call('HDEL', KEYS[4], claim)\n"
    "users_add(KEYS[5], uid, -1)\n"
    /* The ledger may know more claims of this user than Redis does (after a loss): keep the
     * per-user count at least that high, so the limit holds here too. */
    "local floor = tonumber(ARGV[5])\n"
    "if floor and floor > (tonumber(redis.call('HGET', KEYS[5], uid) or '0') or 0) then"
    " redis.call('HSET', KEYS[5], uid, floor) end\n"
    "redis.call('HINCRBY', KEYS[1], 'assigned', -1)\n"
    "redis.call('HINCRBY', KEYS[1], 'paid_out', -reward)\n"
    "byuser_remove(KEYS[8], uid, code)\n"
    "local ns = redis.call('HGET', KEYS[1], 'ns') or 'x'\n"
    "local ev = {_id = 'claim.released:' .. ns .. ':c' .. cat .. ':' .. claim .. ':' .. ARGV[4],"
    " ts = now, service = 'chance',"
    " type = 'claim.released', actor = {id = 'chance', username = 'chance', role = 'system'},"
    " subject = {category = tonumber(cat), code = code, user_id = uid, username = uname,"
    " claim_id = claim}, data = {reward = reward, reason = ARGV[3]},"
    " message = 'code ' .. short(code) .. ' of user ' .. uname .. ' was released (category ' .."
    " cat .. ', ' .. toman(reward) .. ' Toman): ' .. ARGV[3]}\n"
    "redis.call('XADD', KEYS[6], '*', 'e', cjson.encode(ev))\n"
    "local lid = log_add(KEYS[7], ARGV[7], 't', 'released', 'code', code, 'claim', claim,"
    " 'uid', uid, 'uname', uname, 'reward', reward, 'at', now)\n"
    "redis.call('HSET', KEYS[1], 'log_last', lid)\n"
    "return {1, code}\n";

/*
 * PostgreSQL is the record of who owns a code. When Redis forgot an assignment (a crash that
 * lost its last writes, a failover to a replica that lagged) and handed the code to another
 * claim, the gateway sends the ledger's owner here: the code becomes the owner's again, with
 * the owner's details; the claim that drew it meanwhile (the victim) loses it and will draw
 * another under the same claim id; a different code the owner's claim id drew after the loss
 * goes back to the free set.
 * KEYS: 1 meta, 2 free, 3 codes, 4 claims, 5 users, 6 events, 7 log, 8 byuser
 * ARGV: 1 code, 2 owner claim, 3 owner user id, 4 owner username, 5 assigned_at, 6 reward,
 *       7 category id, 8 nonce, 9 log retention (as claim)
 * Returns {1, victim claim id or ''}.
 */
static const char reassign_lua[] = LUA_PRELUDE
    "local code, oclaim, ouid, ouname = ARGV[1], ARGV[2], ARGV[3], ARGV[4]\n"
    "local at, reward, cat = tonumber(ARGV[5]) or 0, tonumber(ARGV[6]), ARGV[7]\n"
    "local d = rec(KEYS[3], code)\n"
    "local mapped = redis.call('HGET', KEYS[4], oclaim)\n"
    "if d and d.s == 'assigned' and d.c == oclaim and mapped == code then return {1, ''} end\n"
    "if mapped and mapped ~= code then\n"
    "  local od = rec(KEYS[3], mapped)\n"
    "  if od and od.s == 'assigned' and od.c == oclaim then\n"
    "    redis.call('HSET', KEYS[3], mapped, cjson.encode({r = od.r, s = 'available'}))\n"
    "    redis.call('SADD', KEYS[2], mapped)\n"
    "    redis.call('HINCRBY', KEYS[1], 'assigned', -1)\n"
    "    redis.call('HINCRBY', KEYS[1], 'paid_out', -od.r)\n"
    "    users_add(KEYS[5], od.u or '', -1)\n"
    "    byuser_remove(KEYS[8], od.u or '', mapped)\n"
    "  end\n"
    "end\n"
    "local victim = ''\n"
    "local held = d and d.s == 'assigned'\n"
    "if held and d.c ~= oclaim then\n"
    "  victim = d.c\n"
    "  if redis.call('HGET', KEYS[4], victim) == code then redis.call('HDEL', KEYS[4], victim) "
    "end\n"
    "  users_add(KEYS[5], d.u or '', -1)\n"
    "  byuser_remove(KEYS[8], d.u or '', code)\n"
    "end\n"
    "if d and d.s == 'available' then redis.call('SREM', KEYS[2], code) end\n"
    "local r = reward or (d and d.r) or 0\n"
    "if not held then\n"
    "  redis.call('HINCRBY', KEYS[1], 'assigned', 1)\n"
    "  redis.call('HINCRBY', KEYS[1], 'paid_out', r)\n"
    "end\n"
    "redis.call('HSET', KEYS[3], code, cjson.encode({r = r, s = 'assigned', u = ouid,"
    " n = ouname, c = oclaim, t = at}))\n"
    "redis.call('HSET', KEYS[4], oclaim, code)\n"
    "if not (held and d.c == oclaim) then users_add(KEYS[5], ouid, 1) end\n"
    "byuser_add(KEYS[8], ouid, code)\n"
    "local ns = redis.call('HGET', KEYS[1], 'ns') or 'x'\n"
    "local ev = {_id = 'code.repaired:' .. ns .. ':c' .. cat .. ':' .. code .. ':' .. ARGV[8],"
    " ts = now_ms(), service = 'chance', type = 'code.repaired',"
    " actor = {id = 'chance', username = 'chance', role = 'system'},"
    " subject = {category = tonumber(cat), code = code, user_id = ouid, username = ouname,"
    " claim_id = oclaim}, data = {reward = r, from_claim = victim, reason = 'ledger'},"
    " message = 'code ' .. short(code) .. ' of category ' .. cat .. ' restored to ' .. ouname .."
    " ' from the ledger' .. (victim ~= '' and ' (it had been handed to another claim)' or '')}\n"
    "redis.call('XADD', KEYS[6], '*', 'e', cjson.encode(ev))\n"
    "local lid = log_add(KEYS[7], ARGV[9], 't', 'repaired', 'code', code, 'claim', oclaim,"
    " 'uid', ouid, 'uname', ouname, 'reward', r, 'at', at)\n"
    "redis.call('HSET', KEYS[1], 'log_last', lid)\n"
    "return {1, victim}\n";

/*
 * KEYS: 1 meta, 2 events. ARGV: 1 category id, 2 actor id, 3 actor username, 4 actor role,
 * 5 nonce, then field/value pairs to set ("" value deletes). Returns 1, or 0 if no such
 * category.
 */
static const char update_lua[] = LUA_PRELUDE
    "if redis.call('HGET', KEYS[1], 'status') ~= 'ready' then return 0 end\n"
    "local changes, parts = {}, {}\n"
    "for i = 6, #ARGV, 2 do\n"
    "  local f, v = ARGV[i], ARGV[i + 1]\n"
    "  if v == '' then redis.call('HDEL', KEYS[1], f) else redis.call('HSET', KEYS[1], f, v) end\n"
    "  changes[f] = v\n"
    "  parts[#parts + 1] = f .. '=' .. (v == '' and 'none' or v)\n"
    "end\n"
    "local now = now_ms()\n"
    "local seq = redis.call('HINCRBY', KEYS[1], 'revision', 1)\n"
    "local ns = redis.call('HGET', KEYS[1], 'ns') or 'x'\n"
    /* The revision alone could repeat after a lost write; the nonce cannot. */
    "local ev = {_id = 'category.changed:' .. ns .. ':c' .. ARGV[1] .. ':' .. seq .. ':' .."
    " ARGV[5], ts = now, service = 'chance', type = 'category.changed',"
    " actor = {id = ARGV[2], username = ARGV[3], role = ARGV[4]},"
    " subject = {category = tonumber(ARGV[1])}, data = changes,"
    " message = ARGV[4] .. ' ' .. ARGV[3] .. ' changed category ' .. ARGV[1] .. ': ' .."
    " table.concat(parts, ', ')}\n"
    "redis.call('XADD', KEYS[2], '*', 'e', cjson.encode(ev))\n"
    "return 1\n";

/* KEYS: 1 meta. ARGV: field/value pairs. Creates the meta unless it exists; 1 if it did. */
static const char cat_init_lua[] = "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n"
                                   "redis.call('HSET', KEYS[1], unpack(ARGV))\n"
                                   "return 1\n";

/*
 * KEYS: 1 meta, 2 free, 3 codes. ARGV: 1 n, then n codes, n rewards, n records (JSON text).
 * Writes the codes not written yet (a retried chunk is harmless) while the category is below
 * its target (two drivers cannot overfill it). Returns {added, total now}.
 */
static const char load_lua[] =
    "local n = tonumber(ARGV[1])\n"
    "local m = redis.call('HMGET', KEYS[1], 'total', 'target', 'status')\n"
    "local total, target = tonumber(m[1]) or 0, tonumber(m[2]) or 0\n"
    "if m[3] ~= 'generating' then return {0, total} end\n"
    "local added, sum = 0, 0\n"
    "for i = 1, n do\n"
    "  if total + added >= target then break end\n"
    "  local code = ARGV[1 + i]\n"
    "  if redis.call('HSETNX', KEYS[3], code, ARGV[1 + 2 * n + i]) == 1 then\n"
    "    redis.call('SADD', KEYS[2], code)\n"
    "    added = added + 1\n"
    "    sum = sum + tonumber(ARGV[1 + n + i])\n"
    "  end\n"
    "end\n"
    "if added > 0 then\n"
    "  redis.call('HINCRBY', KEYS[1], 'total', added)\n"
    "  redis.call('HINCRBY', KEYS[1], 'total_reward', sum)\n"
    "end\n"
    "return {added, total + added}\n";

/* KEYS: 1 meta. Returns 1 if the category is ready (now or before), 0 if it is not full yet,
 * -1 if it is not a generating category. */
static const char cat_finish_lua[] =
    "local m = redis.call('HMGET', KEYS[1], 'status', 'total', 'target')\n"
    "if m[1] == 'ready' then return 1 end\n"
    "if m[1] ~= 'generating' then return -1 end\n"
    "if (tonumber(m[2]) or 0) < (tonumber(m[3]) or 0) then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'status', 'ready')\n"
    "return 1\n";

/*
 * KEYS: 1 batch keys (batch key -> id), 2 the batch's hash, 3 active batches, 4 instance id.
 * ARGV: 1 batch key, 2 batch id, 3 a fresh instance id, then field/value pairs of the batch.
 * Returns {1, id, instance} for a new batch, {0, existing id} when the key was used before.
 */
static const char batch_create_lua[] = "local prev = redis.call('HGET', KEYS[1], ARGV[1])\n"
                                       "if prev then return {0, prev} end\n"
                                       "redis.call('SET', KEYS[4], ARGV[3], 'NX')\n"
                                       "local ns = redis.call('GET', KEYS[4])\n"
                                       "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
                                       "local kv = {}\n"
                                       "for i = 4, #ARGV do kv[#kv + 1] = ARGV[i] end\n"
                                       "redis.call('HSET', KEYS[2], 'ns', ns, unpack(kv))\n"
                                       "redis.call('SADD', KEYS[3], ARGV[2])\n"
                                       "return {1, ARGV[2], ns}\n";

/*
 * KEYS: 1 the batch's hash. ARGV: 1 owner, 2 lease ms, 3 "renew", "take" or "release", then
 * field/value pairs (progress). renew: only the owner extends; take: only an expired lease
 * changes hands; release: the owner gives it up (a clean stop). Returns 1 if the caller holds
 * the lease now, else 0.
 */
static const char batch_lease_lua[] = LUA_PRELUDE
    "local m = redis.call('HMGET', KEYS[1], 'state', 'owner', 'lease_until')\n"
    /* a failed batch still has a driver: the one removing what it wrote */
    "if m[1] ~= 'generating' and m[1] ~= 'failed' then return 0 end\n"
    "local now = now_ms()\n"
    "if ARGV[3] == 'release' then\n"
    "  if m[2] == ARGV[1] then redis.call('HSET', KEYS[1], 'lease_until', 0) end\n"
    "  return 0\n"
    "elseif ARGV[3] == 'renew' then\n"
    "  if m[2] ~= ARGV[1] then return 0 end\n"
    "elseif (tonumber(m[3]) or 0) > now and m[2] ~= ARGV[1] then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lease_until', now + tonumber(ARGV[2]))\n"
    "for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end\n"
    "return 1\n";

/*
 * KEYS: 1 the batch's hash, 2 ready categories, 3 global events, 4 active batches.
 * ARGV: 1 batch id, 2 the batch.generated event, 3.. category ids.
 * Returns 1 when it closed the batch now, 0 if it was not generating (done before).
 */
static const char batch_finish_lua[] = LUA_PRELUDE
    "if redis.call('HGET', KEYS[1], 'state') ~= 'generating' then return 0 end\n"
    "for i = 3, #ARGV do redis.call('ZADD', KEYS[2], ARGV[i], ARGV[i]) end\n"
    "redis.call('HSET', KEYS[1], 'state', 'ready', 'finished_at', now_ms(), 'owner', '')\n"
    "redis.call('SREM', KEYS[4], ARGV[1])\n"
    "redis.call('XADD', KEYS[3], '*', 'e', ARGV[2])\n"
    "return 1\n";

/*
 * KEYS: 1 the batch's hash, 2 global events. ARGV: 1 error, 2 the batch.failed event.
 * Returns 1 when it closed the batch now, 0 if it was not generating.
 */
static const char batch_fail_lua[] = LUA_PRELUDE
    "if redis.call('HGET', KEYS[1], 'state') ~= 'generating' then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'state', 'failed', 'error', ARGV[1], 'finished_at', now_ms())\n"
    "redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])\n"
    "return 1\n";

const char *const script_sources[SCRIPT_COUNT] = {
    [SCRIPT_CLAIM] = claim_lua,
    [SCRIPT_RELEASE] = release_lua,
    [SCRIPT_REASSIGN] = reassign_lua,
    [SCRIPT_UPDATE] = update_lua,
    [SCRIPT_CAT_INIT] = cat_init_lua,
    [SCRIPT_LOAD] = load_lua,
    [SCRIPT_CAT_FINISH] = cat_finish_lua,
    [SCRIPT_BATCH_CREATE] = batch_create_lua,
    [SCRIPT_BATCH_LEASE] = batch_lease_lua,
    [SCRIPT_BATCH_FINISH] = batch_finish_lua,
    [SCRIPT_BATCH_FAIL] = batch_fail_lua,
};
