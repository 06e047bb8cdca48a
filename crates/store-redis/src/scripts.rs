//! The Lua scripts that make appends, conditional appends and clears atomic on the server.

use std::sync::LazyLock;

use redis::Script;

/// Appends events to one topic, atomically, optionally only if the stream's
/// last entry is the expected one.
///
/// KEYS: stream, meta hash, topic set, new-topic stream.
/// ARGV: topic, expected last id (`""`: unconditional, `"none"`: empty topic),
/// the first event's id when this is a retry (else `""`), the first event's
/// milliseconds, the bytes to add to the topic's counter, then pairs of
/// (`<ms>-*`, event JSON line) where the milliseconds never decrease along the
/// batch (the client raises a late event's to its predecessor's).
///
/// Returns `{0, actual}` on a conflict; `{1, first id}` when every entry got
/// its own milliseconds (the client derives the other ids: the sequence
/// restarts at 0 when the milliseconds grow and counts up while they stay);
/// `{2, id…}` otherwise.
///
/// Each entry gets the id `max(event ms, last id ms)-<next seq>`: ids keep
/// growing (also across clears: the stream keeps its last id) and never fall
/// below the event's own time, so an id range starting at `since` misses no
/// event with `timestamp >= since`. Only the first `XADD` can meet a higher
/// top (a late event, or another writer ahead); then the batch continues
/// from the top's milliseconds. Milliseconds are compared as decimal strings,
/// never as Lua's floating-point numbers.
///
/// A retry (the reply to an earlier try was lost with its connection) first
/// looks for the first event among the newest 10,000 entries from its
/// millisecond on; if the batch landed, it answers with the batch's ids
/// instead of appending it twice. This makes appends safe to retry.
pub(crate) static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local stream = KEYS[1]
local expected = ARGV[2]
local count = (#ARGV - 5) / 2
if ARGV[3] ~= '' then
  local head = '{"id":"' .. ARGV[3] .. '"'
  local recent = redis.call('XREVRANGE', stream, '+', ARGV[4] .. '-0', 'COUNT', 10000)
  for j = 1, #recent do
    local fields = recent[j][2]
    for f = 1, #fields, 2 do
      if fields[f] == 'e' and string.sub(fields[f + 1], 1, #head) == head and j >= count then
        local out = {2}
        for k = j, j - count + 1, -1 do out[#out + 1] = recent[k][1] end
        return out
      end
    end
  end
end
if expected ~= '' then
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  local actual = 'none'
  if #last > 0 then actual = last[1][1] end
  if actual ~= expected then return {0, actual} end
end
if redis.call('SADD', KEYS[3], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', 1000, '*', 't', ARGV[1])
end
if ARGV[5] ~= '0' then redis.call('HINCRBY', KEYS[2], 'bytes', ARGV[5]) end
local first = redis.pcall('XADD', stream, ARGV[6], 'e', ARGV[7])
if not (type(first) == 'table' and first.err) then
  for i = 8, #ARGV, 2 do redis.call('XADD', stream, ARGV[i], 'e', ARGV[i + 1]) end
  return {1, first}
end
-- The stream's top is above the first event's time: go on from the top's.
local info = redis.call('XINFO', 'STREAM', stream)
local top = nil
for j = 1, #info, 2 do
  if info[j] == 'last-generated-id' then top = info[j + 1] end
end
if top == nil then return redis.error_reply('stream without last-generated-id') end
local floor = string.match(top, '^(%d+)-')
local out = {2}
for i = 6, #ARGV, 2 do
  local ms = string.sub(ARGV[i], 1, -3)
  if #ms < #floor or (#ms == #floor and ms < floor) then ms = floor end
  out[#out + 1] = redis.call('XADD', stream, ms .. '-*', 'e', ARGV[i + 1])
end
return out
"#,
    )
});

/// Removes every entry of a stream but keeps the stream (and so its last id).
///
/// KEYS: stream, meta hash. Returns how many entries were removed.
pub(crate) static CLEAR_TOPIC: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = redis.call('XLEN', KEYS[1])
if n > 0 then redis.call('XTRIM', KEYS[1], 'MAXLEN', 0) end
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'bytes', 0) end
return n
"#,
    )
});

/// Deletes the given entries and subtracts their sizes from the topic's bytes.
///
/// KEYS: stream, meta hash. ARGV: pairs of (id, size). Returns how many were deleted
/// (entries already gone, e.g. by a concurrent clear, are not counted).
pub(crate) static DELETE_ENTRIES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = 0
local bytes = 0
for i = 1, #ARGV, 2 do
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then
    n = n + 1
    bytes = bytes + tonumber(ARGV[i + 1])
  end
end
if bytes > 0 then redis.call('HINCRBY', KEYS[2], 'bytes', -bytes) end
return n
"#,
    )
});

/// Counts up to ARGV[2] entries of KEYS[1] from ARGV[1] (an XRANGE start) on,
/// without sending them. Returns `{count, last id counted}`.
pub(crate) static COUNT_FROM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local r = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
if #r == 0 then return {0, ''} end
return {#r, r[#r][1]}
"#,
    )
});

/// Applies one state change: compares the entity's newest version, appends
/// the change event to the type's stream, makes it the newest record and
/// keeps it among the entity's versions, dropping (from the versions and the
/// stream) the one that falls past the history limit; all or nothing.
///
/// KEYS: stream, meta hash, topic set, new-topic stream, latest hash, versions hash.
/// ARGV: topic, entity id, expected version, new version, event ms, event
/// JSON line, bytes to count, the version falling out of the history (`0`:
/// none), the event's id (to recognise a retry whose first try landed).
///
/// A latest value is `<version> <stream id> <line>`, a versions value
/// `<stream id> <line>`, under the field `<entity id>\n<version>`. Returns
/// `{1, stream id}`, or `{0, newest version}` on a conflict.
pub(crate) static PUT_STATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cur = redis.call('HGET', KEYS[5], ARGV[2])
local curv = '0'
if cur then curv = string.match(cur, '^(%d+) ') end
if curv ~= ARGV[3] then
  if curv == ARGV[4] and string.find(cur, '{"id":"' .. ARGV[9] .. '"', 1, true) then
    return {1, string.match(cur, '^%d+ (%S+) ')}
  end
  return {0, curv}
end
if redis.call('SADD', KEYS[3], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', 1000, '*', 't', ARGV[1])
end
local id = redis.pcall('XADD', KEYS[1], ARGV[5] .. '-*', 'e', ARGV[6], 'k', ARGV[2])
if type(id) == 'table' and id.err then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  local top = nil
  for j = 1, #info, 2 do
    if info[j] == 'last-generated-id' then top = info[j + 1] end
  end
  id = redis.call('XADD', KEYS[1], string.match(top, '^(%d+)-') .. '-*', 'e', ARGV[6], 'k', ARGV[2])
end
local bytes = tonumber(ARGV[7])
redis.call('HSET', KEYS[5], ARGV[2], ARGV[4] .. ' ' .. id .. ' ' .. ARGV[6])
redis.call('HSET', KEYS[6], ARGV[2] .. '\n' .. ARGV[4], id .. ' ' .. ARGV[6])
if ARGV[8] ~= '0' then
  local field = ARGV[2] .. '\n' .. ARGV[8]
  local old = redis.call('HGET', KEYS[6], field)
  if old then
    redis.call('HDEL', KEYS[6], field)
    local oid, oline = string.match(old, '^(%S+) (.*)$')
    if redis.call('XDEL', KEYS[1], oid) == 1 then bytes = bytes - #oline - 1 end
  end
end
redis.call('HINCRBY', KEYS[2], 'bytes', bytes)
return {1, id}
"#,
    )
});
