/* Lua sources of the chance scripts. Keys follow "chance:{c<id>}:<what>" (see chance.c). */
#include "scripts.h"

/* Shared Lua helpers, prepended to every script. */
#define LUA_PRELUDE                                                                                \
    "local function now_ms() local t = redis.call('TIME');"                                        \
    " return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end\n"                      \
    "local function toman(n) local s = string.format('%d', n);"                                    \
    " local r = s:reverse():gsub('(%d%d%d)', '%1,'):reverse();"                                    \
    " if r:sub(1, 1) == ',' then r = r:sub(2) end return r end\n"                                  \
    "local function short(code) if #code > 6 then return code:sub(1, 6) .. '\\226\\128\\166' end"  \
    " return code end\n"

/*
 * KEYS: 1 meta, 2 free, 3 claims, 4 users, 5 events, 6 log, 7 byuser
 * ARGV: 1 claim_id, 2 user_id, 3 username, 4 code-key prefix, 5 category id
 * Returns {1, code, reward, assigned_at, replay} or {0, error_code}.
 */
static const char claim_lua[] = LUA_PRELUDE
    "local claim, uid, uname, prefix, cat = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]\n"
    "local prev = redis.call('HGET', KEYS[3], claim)\n"
    "if prev then\n"
    "  local h = redis.call('HMGET', prefix .. prev, 'reward', 'assigned_at')\n"
    "  return {1, prev, tonumber(h[1]), tonumber(h[2]), 1}\n"
    "end\n"
    "local m = redis.call('HMGET', KEYS[1], 'status', 'enabled', 'starts_at', 'ends_at',"
    " 'per_user_limit', 'ns')\n"
    "if not m[1] or m[1] ~= 'ready' then return {0, 'category_not_found'} end\n"
    "if m[2] ~= '1' then return {0, 'category_disabled'} end\n"
    "local now = now_ms()\n"
    "local s, e = tonumber(m[3]) or 0, tonumber(m[4]) or 0\n"
    "if (s > 0 and now < s) or (e > 0 and now >= e) then return {0, 'not_in_window'} end\n"
    "local count = tonumber(redis.call('HGET', KEYS[4], uid) or '0')\n"
    "if count >= tonumber(m[5]) then return {0, 'user_limit_reached'} end\n"
    "local code = redis.call('SPOP', KEYS[2])\n"
    "if not code then return {0, 'category_exhausted'} end\n"
    /* From here on only writes: every check above has passed. */
    "local key = prefix .. code\n"
    "local reward = tonumber(redis.call('HGET', key, 'reward'))\n"
    "redis.call('HSET', key, 'status', 'assigned', 'user_id', uid, 'username', uname,"
    " 'claim_id', claim, 'assigned_at', now)\n"
    "redis.call('HSET', KEYS[3], claim, code)\n"
    "redis.call('HINCRBY', KEYS[4], uid, 1)\n"
    "redis.call('HINCRBY', KEYS[1], 'assigned', 1)\n"
    "redis.call('HINCRBY', KEYS[1], 'paid_out', reward)\n"
    "local mine = redis.call('HGET', KEYS[7], uid)\n"
    "redis.call('HSET', KEYS[7], uid, mine and (mine .. ' ' .. code) or code)\n"
    "local ev = {_id = 'code.assigned:' .. (m[6] or 'x') .. ':c' .. cat .. ':' .. claim,"
    " ts = now, service = 'chance',"
    " type = 'code.assigned', actor = {id = uid, username = uname, role = 'user'},"
    " subject = {category = tonumber(cat), code = code, user_id = uid, username = uname,"
    " claim_id = claim}, data = {reward = reward},"
    " message = 'user ' .. uname .. ' received code ' .. short(code) .. ' (category ' .. cat .."
    " ', ' .. toman(reward) .. ' Toman)'}\n"
    "redis.call('XADD', KEYS[5], '*', 'e', cjson.encode(ev))\n"
    "redis.call('XADD', KEYS[6], '*', 't', 'assigned', 'code', code, 'claim', claim,"
    " 'uid', uid, 'uname', uname, 'reward', reward, 'at', now)\n"
    "return {1, code, reward, now, 0}\n";

/*
 * KEYS: 1 the global index (code -> category). ARGV: 1 category id, 2.. codes.
 * Returns the 1-based positions (within the codes) that already existed.
 */
static const char reserve_lua[] =
    "local dup = {}\n"
    "for i = 2, #ARGV do\n"
    "  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[1]) == 0 then dup[#dup + 1] = i - 1 end\n"
    "end\n"
    "return dup\n";

/*
 * KEYS: 1 meta, 2 free, 3.. code hashes (n of them).
 * ARGV: 1 category id, then n codes, then n rewards. Returns the sum of rewards.
 */
static const char load_lua[] =
    "local n = #KEYS - 2\n"
    "local sum = 0\n"
    "for i = 1, n do\n"
    "  local code, reward = ARGV[1 + i], tonumber(ARGV[1 + n + i])\n"
    "  redis.call('HSET', KEYS[2 + i], 'code', code, 'category', ARGV[1], 'reward', reward,"
    " 'status', 'available')\n"
    "  redis.call('SADD', KEYS[2], code)\n"
    "  sum = sum + reward\n"
    "end\n"
    "redis.call('HINCRBY', KEYS[1], 'total', n)\n"
    "redis.call('HINCRBY', KEYS[1], 'total_reward', sum)\n"
    "return sum\n";

/*
 * KEYS: 1 meta, 2 events. ARGV: 1 category id, 2 actor id, 3 actor username, 4 actor role,
 * then field/value pairs to set ("" value deletes). Returns 1, or 0 if no such category.
 */
static const char update_lua[] = LUA_PRELUDE
    "if redis.call('HGET', KEYS[1], 'status') ~= 'ready' then return 0 end\n"
    "local changes, parts = {}, {}\n"
    "for i = 5, #ARGV, 2 do\n"
    "  local f, v = ARGV[i], ARGV[i + 1]\n"
    "  if v == '' then redis.call('HDEL', KEYS[1], f) else redis.call('HSET', KEYS[1], f, v) end\n"
    "  changes[f] = v\n"
    "  parts[#parts + 1] = f .. '=' .. (v == '' and 'none' or v)\n"
    "end\n"
    "local now = now_ms()\n"
    "local seq = redis.call('HINCRBY', KEYS[1], 'revision', 1)\n"
    "local ns = redis.call('HGET', KEYS[1], 'ns') or 'x'\n"
    "local ev = {_id = 'category.changed:' .. ns .. ':c' .. ARGV[1] .. ':' .. seq, ts = now,"
    " service = 'chance', type = 'category.changed',"
    " actor = {id = ARGV[2], username = ARGV[3], role = ARGV[4]},"
    " subject = {category = tonumber(ARGV[1])}, data = changes,"
    " message = ARGV[4] .. ' ' .. ARGV[3] .. ' changed category ' .. ARGV[1] .. ': ' .."
    " table.concat(parts, ', ')}\n"
    "redis.call('XADD', KEYS[2], '*', 'e', cjson.encode(ev))\n"
    "return 1\n";

/*
 * KEYS: 1 meta, 2 free, 3 claims, 4 users, 5 events, 6 log, 7 byuser
 * ARGV: 1 claim_id, 2 code-key prefix, 3 category id, 4 reason
 * Returns {1, code} or {0, error_code}.
 */
static const char release_lua[] = LUA_PRELUDE
    "local claim, prefix, cat = ARGV[1], ARGV[2], ARGV[3]\n"
    "local code = redis.call('HGET', KEYS[3], claim)\n"
    "if not code then return {0, 'claim_not_found'} end\n"
    "local key = prefix .. code\n"
    "local h = redis.call('HMGET', key, 'status', 'claim_id', 'user_id', 'username', 'reward')\n"
    "if h[1] ~= 'assigned' or h[2] ~= claim then return {0, 'not_owned'} end\n"
    "local uid, uname, reward = h[3], h[4], tonumber(h[5])\n"
    "local now = now_ms()\n"
    "redis.call('HSET', key, 'status', 'available')\n"
    "redis.call('HDEL', key, 'user_id', 'username', 'claim_id', 'assigned_at')\n"
    "redis.call('SADD', KEYS[2], code)\n"
    "redis.call('HDEL', KEYS[3], claim)\n"
    "if tonumber(redis.call('HINCRBY', KEYS[4], uid, -1)) <= 0 then"
    " redis.call('HDEL', KEYS[4], uid) end\n"
    "redis.call('HINCRBY', KEYS[1], 'assigned', -1)\n"
    "redis.call('HINCRBY', KEYS[1], 'paid_out', -reward)\n"
    "local mine, kept = redis.call('HGET', KEYS[7], uid) or '', {}\n"
    "for c in mine:gmatch('%S+') do if c ~= code then kept[#kept + 1] = c end end\n"
    "if #kept > 0 then redis.call('HSET', KEYS[7], uid, table.concat(kept, ' '))"
    " else redis.call('HDEL', KEYS[7], uid) end\n"
    "local ns = redis.call('HGET', KEYS[1], 'ns') or 'x'\n"
    "local ev = {_id = 'claim.released:' .. ns .. ':c' .. cat .. ':' .. claim, ts = now,"
    " service = 'chance',"
    " type = 'claim.released', actor = {id = 'chance', username = 'chance', role = 'system'},"
    " subject = {category = tonumber(cat), code = code, user_id = uid, username = uname,"
    " claim_id = claim}, data = {reward = reward, reason = ARGV[4]},"
    " message = 'code ' .. short(code) .. ' of user ' .. uname .. ' was released (category ' .."
    " cat .. ', ' .. toman(reward) .. ' Toman): ' .. ARGV[4]}\n"
    "redis.call('XADD', KEYS[5], '*', 'e', cjson.encode(ev))\n"
    "redis.call('XADD', KEYS[6], '*', 't', 'released', 'code', code, 'claim', claim,"
    " 'uid', uid, 'uname', uname, 'reward', reward, 'at', now)\n"
    "return {1, code}\n";

const char *const script_sources[SCRIPT_COUNT] = {
    [SCRIPT_CLAIM] = claim_lua,   [SCRIPT_RESERVE] = reserve_lua, [SCRIPT_LOAD] = load_lua,
    [SCRIPT_UPDATE] = update_lua, [SCRIPT_RELEASE] = release_lua,
};
