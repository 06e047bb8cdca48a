//! The Lua scripts of work groups (see [`crate::groups`]): each change of a
//! group's consumer groups and side keys is one script, so members never see
//! half of one.
//!
//! Every script starts with [`PRELUDE`] and takes ARGV 1 to 3 as the key
//! prefix, the group's name and the calling member's id (its consumer name);
//! the group's own keys and each topic's stream key are derived from them
//! (the store needs a single server, not Redis Cluster, as for appends).
//! Times come from the server's `TIME`, never from a member's clock.

use std::sync::LazyLock;

use redis::Script;

/// Helpers every group script begins with.
///
/// - `skey(t)`: the stream of topic `t`;
/// - `held(k, id, c)`: the delivery count of entry `id` of stream `k` if
///   consumer `c` holds it, else `nil`;
/// - `fail(t, id, count, delay, err)`: a failed delivery: the entry is
///   parked (held by the consumer `~waiting`, count kept) and becomes due
///   after `delay` ms, or, after its last delivery, is marked for its dead
///   letter with `err`;
/// - `ack_tokens(i, n, gen)`: acks the `n` (topic, id, delivery) triples
///   from ARGV `i` on (sorted by topic, then id) that the caller still
///   holds, with one `XPENDING` and one `XACK` per topic; returns how many.
///   `gen` is the group's `moves` counter when the oldest of them was
///   handed out: if it is still that, no entry changed holder since, so
///   they are all still the caller's and are acked without the check;
/// - `moved()`: counts a change of holder other than `XREADGROUP` (a
///   failure, a claim, a hand-back) in the group's `moves`;
/// - `wake()`: tells waiting members that something changed.
const PRELUDE: &str = r#"
local prefix, group, me = ARGV[1], ARGV[2], ARGV[3]
local WAITING = '~waiting'
local gkey = prefix .. 'group:{' .. group .. '}:'
local meta_key, members_key = gkey .. 'meta', gkey .. 'members'
local due_key, dead_key, wake_key = gkey .. 'due', gkey .. 'dead', gkey .. 'wake'
local released_key = gkey .. 'released'
local function skey(t) return prefix .. '{' .. t .. '}:s' end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function split(f)
  return string.match(f, '^(.*)\n([^\n]*)$')
end
local function held(k, id, c)
  local p = redis.pcall('XPENDING', k, group, id, id, 1, c)
  if type(p) ~= 'table' or p.err or #p == 0 then return nil end
  return tonumber(p[1][4])
end
local function moved()
  redis.call('HINCRBY', meta_key, 'moves', 1)
end
local function fail(t, id, count, delay, err, max, now)
  redis.call('XCLAIM', skey(t), group, WAITING, 0, id, 'JUSTID')
  moved()
  local f = t .. '\n' .. id
  if count >= max then
    redis.call('ZREM', due_key, f)
    redis.call('HSET', dead_key, f, count .. '\n' .. err)
  else
    redis.call('ZADD', due_key, now + delay, f)
  end
end
local function wake()
  redis.call('XADD', wake_key, 'MAXLEN', '~', 100, '*', 'w', '1')
end
local function ack_tokens(i, n, gen)
  local acked, j, last = 0, i, i + 3 * n - 1
  local fast = gen ~= '' and (redis.call('HGET', meta_key, 'moves') or '0') == gen
  while j <= last do
    local t = ARGV[j]
    local e = j
    while e + 3 <= last and ARGV[e + 3] == t do e = e + 3 end
    local k = skey(t)
    local ids = {}
    if fast then
      for a = j, e, 3 do ids[#ids + 1] = ARGV[a + 1] end
    else
      local p = redis.pcall('XPENDING', k, group, ARGV[j + 1], ARGV[e + 1], 1000000, me)
      if type(p) == 'table' and not p.err then
        local counts = {}
        for _, x in ipairs(p) do counts[x[1]] = tonumber(x[4]) end
        for a = j, e, 3 do
          if counts[ARGV[a + 1]] == tonumber(ARGV[a + 2]) then ids[#ids + 1] = ARGV[a + 1] end
        end
      end
    end
    for c = 1, #ids, 1000 do
      acked = acked + redis.call('XACK', k, group, unpack(ids, c, math.min(c + 999, #ids)))
    end
    j = e + 3
  end
  return acked
end
local function last_id(k)
  local r = redis.call('XREVRANGE', k, '+', '-', 'COUNT', 1)
  if #r == 0 then return '0-0' end
  return r[1][1]
end
local function line_of(fields)
  for f = 1, #fields, 2 do
    if fields[f] == 'e' then return fields[f + 1] end
  end
  return false
end
"#;

fn script(body: &str) -> Script {
    Script::new(&[PRELUDE, body].concat())
}

/// Creates the group unless it exists.
///
/// ARGV 4…: pattern, ordering (`none`/`per_topic`), dead-letter topic, start
/// (`beginning`, `new`, `since`), the `since` id (`<ms - 1>-<max seq>`),
/// exclusive (`1`/`0`), then per matching topic the topic and the id to
/// start after in it (`""`: as the start says). Creates the consumer group
/// of each topic at that id, else at `0`, `$` or the `since` id (`$` if the
/// stream ends before it), after removing one a deleted group may have
/// left. Returns `{1}` when created, else `{0, pattern, ordering,
/// exclusive}` of the existing group (exclusive `false` for a group created
/// before the field).
pub(crate) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('EXISTS', meta_key) == 1 then
  return {0, redis.call('HGET', meta_key, 'pattern'), redis.call('HGET', meta_key, 'ordering'),
    redis.call('HGET', meta_key, 'exclusive')}
end
local function id_below(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if #am ~= #bm then return #am < #bm end
  if am ~= bm then return am < bm end
  if #as ~= #bs then return #as < #bs end
  return as < bs
end
redis.call('HSET', meta_key, 'pattern', ARGV[4], 'ordering', ARGV[5], 'dead_letter', ARGV[6],
  'start', ARGV[7], 'exclusive', ARGV[9], 'created', now_ms(), 'redelivered', 0, 'dead_lettered', 0)
redis.call('SADD', prefix .. 'groups', group)
for i = 10, #ARGV - 1, 2 do
  local k = skey(ARGV[i])
  redis.pcall('XGROUP', 'DESTROY', k, group)
  local start = '0'
  if ARGV[i + 1] ~= '' then
    start = ARGV[i + 1]
  elseif ARGV[7] == 'new' then
    start = '$'
  elseif ARGV[7] == 'since' then
    local last = last_id(k)
    start = '$'
    if last ~= '0-0' and id_below(ARGV[8], last) then start = ARGV[8] end
  end
  redis.call('XGROUP', 'CREATE', k, group, start, 'MKSTREAM')
end
return {1}
"#,
    )
});

/// Creates, at `0`, the consumer group of each topic of ARGV 4… that has
/// none (a topic created after the group). Returns 0 when the group is gone.
pub(crate) static ENSURE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('EXISTS', meta_key) == 0 then return 0 end
for i = 4, #ARGV do
  redis.pcall('XGROUP', 'CREATE', skey(ARGV[i]), group, '0', 'MKSTREAM')
end
return 1
"#,
    )
});

/// Acks (topic, id, delivery) triples the member holds; ARGV 4: 1 when the
/// group has per-topic order (an ack may free a topic: waiting members are
/// woken), 5: the `moves` generation of the tokens (see `ack_tokens`, `""`:
/// unknown), 6: how many triples, then the triples. Returns `{acked, the
/// group's moves counter}`.
pub(crate) static ACK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local acked = ack_tokens(7, tonumber(ARGV[6]), ARGV[5])
if acked > 0 and ARGV[4] == '1' then wake() end
return {acked, redis.call('HGET', meta_key, 'moves') or '0'}
"#,
    )
});

/// Acks, takes back what failed, and hands the member events; one step.
///
/// ARGV 4: room (events it may take), 5: `1` for per-topic order, 6: `1` to
/// take back the events whose ack wait passed, 7: the ack wait in ms, 8:
/// max deliveries, 9: the error of a passed ack wait, 10: the topic to
/// start with (0-based, for fairness), 11: `1` to report what to wait on if
/// nothing came, 12: the acks' `moves` generation, 13: how many ack triples
/// follow, then the triples, then the group's topics.
///
/// Order: the acks; with ARGV 6, every entry idle past the ack wait (but
/// parked ones) fails; parked entries that are due, oldest due first, are
/// claimed (their count grows by one); then new entries of the topics
/// (`XREADGROUP >`), under per-topic order only from a topic with no
/// pending entry, one at a time.
///
/// Returns `{marks, new-topic notice id, acked, entries, waits, wake id,
/// ms to the next due entry (-1: none), 1 if members hold entries, missing,
/// the group's moves counter}`
/// where `entries` is flat (topic, id, count, line), `waits` flat (stream
/// key, last id) of the topics a new entry would free, and `missing` lists
/// topics without the consumer group. Waits are reported only if no entry came.
pub(crate) static FETCH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now = now_ms()
local room = tonumber(ARGV[4])
local per_topic = ARGV[5] == '1'
local max = tonumber(ARGV[8])
local nacks = tonumber(ARGV[13])
local acked = ack_tokens(14, nacks, ARGV[12])
if acked > 0 and per_topic then wake() end
local topics = {}
for i = 14 + 3 * nacks, #ARGV do topics[#topics + 1] = ARGV[i] end
local out, taken, missing = {}, 0, {}
local function deliver(t, id, count, line)
  out[#out + 1] = t
  out[#out + 1] = id
  out[#out + 1] = count
  out[#out + 1] = line
  taken = taken + 1
end
if ARGV[6] == '1' then
  for _, t in ipairs(topics) do
    local p = redis.pcall('XPENDING', skey(t), group, 'IDLE', ARGV[7], '-', '+', 1000)
    if type(p) == 'table' and not p.err then
      for _, e in ipairs(p) do
        if e[2] ~= WAITING then fail(t, e[1], tonumber(e[4]), 0, ARGV[9], max, now) end
      end
    end
  end
end
if room > 0 then
  local due = redis.call('ZRANGEBYSCORE', due_key, '-inf', now, 'LIMIT', 0, room)
  local claimed, redelivered = 0, 0
  for _, f in ipairs(due) do
    redis.call('ZREM', due_key, f)
    local t, id = split(f)
    local k = skey(t)
    local c = held(k, id, WAITING)
    local handed_back = redis.call('HDEL', released_key, f) == 1
    if c then
      local got = redis.call('XCLAIM', k, group, me, 0, id)
      if type(got[1]) == 'table' then
        deliver(t, id, c + 1, line_of(got[1][2]))
        claimed = claimed + 1
        if not handed_back then redelivered = redelivered + 1 end
      end
    end
  end
  if redelivered > 0 then redis.call('HINCRBY', meta_key, 'redelivered', redelivered) end
  if claimed > 0 then moved() end
end
local n = #topics
local first = tonumber(ARGV[10])
local blocked = {}
for j = 0, n - 1 do
  local left = room - taken
  if left <= 0 then break end
  local t = topics[(first + j) % n + 1]
  local k = skey(t)
  if per_topic then
    local s = redis.pcall('XPENDING', k, group)
    if type(s) == 'table' and not s.err and tonumber(s[1]) > 0 then
      blocked[t] = true
      left = 0
    else
      left = 1
    end
  end
  if left > 0 then
    local r = redis.pcall('XREADGROUP', 'GROUP', group, me, 'COUNT', left, 'STREAMS', k, '>')
    if type(r) == 'table' and r.err then
      missing[#missing + 1] = t
    elseif r then
      for _, e in ipairs(r[1][2]) do deliver(t, e[1], 1, line_of(e[2])) end
    end
  end
end
local notice = last_id(prefix .. 'topics:new')
local marks = redis.call('HLEN', dead_key)
local moves = redis.call('HGET', meta_key, 'moves') or '0'
if #out > 0 or ARGV[11] ~= '1' then
  return {marks, notice, acked, out, {}, '', -1, 0, missing, moves}
end
local waits, holding = {}, 0
for _, t in ipairs(topics) do
  local k = skey(t)
  local s = redis.pcall('XPENDING', k, group)
  if type(s) == 'table' and not s.err then
    if s[4] then
      for _, c in ipairs(s[4]) do
        if c[1] ~= WAITING then holding = 1 end
      end
    end
    if not (per_topic and tonumber(s[1]) > 0) then
      waits[#waits + 1] = k
      waits[#waits + 1] = last_id(k)
    end
  end
end
local next_due = -1
local d = redis.call('ZRANGE', due_key, 0, 0, 'WITHSCORES')
if #d > 0 then next_due = math.max(0, tonumber(d[2]) - now) end
return {marks, notice, acked, out, waits, last_id(wake_key), next_due, holding, missing, moves}
"#,
    )
});

/// A failed delivery. ARGV 4…: topic, id, delivery, delay in ms, max
/// deliveries, error. Returns 0 when the member no longer holds that
/// delivery, 1 when the entry will come back, 2 when it is marked for its
/// dead letter.
pub(crate) static NACK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local c = held(skey(ARGV[4]), ARGV[5], me)
if not c or c ~= tonumber(ARGV[6]) then return 0 end
local max = tonumber(ARGV[8])
fail(ARGV[4], ARGV[5], c, tonumber(ARGV[7]), ARGV[9], max, now_ms())
wake()
if c >= max then return 2 end
return 1
"#,
    )
});

/// Restarts the ack wait (`XCLAIM … JUSTID`: idle 0, count kept) of the
/// (topic, id, delivery) triples of ARGV 4… the member still holds.
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local n = 0
for j = 4, #ARGV, 3 do
  local k = skey(ARGV[j])
  local c = held(k, ARGV[j + 1], me)
  if c and c == tonumber(ARGV[j + 2]) then
    redis.call('XCLAIM', k, group, me, 0, ARGV[j + 1], 'JUSTID')
    n = n + 1
  end
end
return n
"#,
    )
});

/// Hands back the (topic, id, delivery) triples of ARGV 4… the member still
/// holds and has not started: each is parked with its count one lower and
/// due at once (in the order given), and marked in the `released` hash, so the claim that
/// delivers it again restores the count and does not count a redelivery.
/// Returns how many were handed back.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now, n = now_ms(), 0
local last = #ARGV - 2
for j = 4, last, 3 do
  local k = skey(ARGV[j])
  local c = held(k, ARGV[j + 1], me)
  if c and c == tonumber(ARGV[j + 2]) then
    redis.call('XCLAIM', k, group, WAITING, 0, ARGV[j + 1], 'RETRYCOUNT', c - 1, 'JUSTID')
    local f = ARGV[j] .. '\n' .. ARGV[j + 1]
    -- Due now, in the order given (equal scores would sort by text: 1-10 before 1-9).
    redis.call('ZADD', due_key, now - (last - j) / 3000, f)
    redis.call('HSET', released_key, f, 1)
    n = n + 1
  end
end
if n > 0 then
  moved()
  wake()
end
return n
"#,
    )
});

/// Moves every entry `owner` holds in the streams of `topics` to the parked
/// ones, due now (`err` nil: not a failure, the count is kept) or as failures
/// with `err`; then removes the consumer. Returns how many entries moved.
const HAND_BACK: &str = r#"
local function hand_back(owner, topics, err, max, now)
  local moved = 0
  for _, t in ipairs(topics) do
    local k = skey(t)
    while true do
      local p = redis.pcall('XPENDING', k, group, '-', '+', 1000, owner)
      if type(p) ~= 'table' or p.err or #p == 0 then break end
      for _, e in ipairs(p) do
        if err then
          fail(t, e[1], tonumber(e[4]), 0, err, max, now)
        else
          redis.call('XCLAIM', k, group, WAITING, 0, e[1], 'JUSTID')
          redis.call('ZADD', due_key, now, t .. '\n' .. e[1])
        end
        moved = moved + 1
      end
    end
    redis.pcall('XGROUP', 'DELCONSUMER', k, group, owner)
  end
  if moved > 0 then redis.call('HINCRBY', meta_key, 'moves', 1) end
  return moved
end
"#;

/// The member leaves: its entries are due at once (not failures), its
/// consumers and registration go. ARGV 4…: the group's topics.
pub(crate) static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            PRELUDE,
            HAND_BACK,
            r#"
local topics = {}
for i = 4, #ARGV do topics[#topics + 1] = ARGV[i] end
local moved = hand_back(me, topics, nil, 0, now_ms())
redis.call('HDEL', members_key, me)
wake()
return moved
"#,
        ]
        .concat(),
    )
});

/// Members whose connection is gone: each one's entries fail (they come
/// back at once, or are marked for their dead letter), its consumers and
/// registration go, unless it registered another connection meanwhile.
///
/// ARGV 4: max deliveries, 5: how many (member, client id) pairs follow,
/// then the pairs, then the group's topics. Returns how many entries moved.
pub(crate) static REAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            PRELUDE,
            HAND_BACK,
            r#"
local max, n = tonumber(ARGV[4]), tonumber(ARGV[5])
local topics = {}
for i = 6 + 2 * n, #ARGV do topics[#topics + 1] = ARGV[i] end
local now, moved = now_ms(), 0
for j = 6, 5 + 2 * n, 2 do
  local m = ARGV[j]
  if redis.call('HGET', members_key, m) == ARGV[j + 1] then
    moved = moved + hand_back(m, topics, 'member ' .. m .. ' left with the event in flight', max, now)
    redis.call('HDEL', members_key, m)
  end
end
if moved > 0 then wake() end
return moved
"#,
        ]
        .concat(),
    )
});

/// Dead-letters one marked entry: appends the letter to the dead-letter
/// topic with the store's append bookkeeping (topic set, new-topic stream,
/// byte count; the id as in [`crate::scripts::APPEND`]) and acks the entry,
/// atomically; nothing if another member settled it first.
///
/// ARGV 4: the mark (`<topic>\n<id>`), 5: the dead-letter topic, 6: the
/// letter's ms, 7: its JSON line. Returns the letter's id, or 0.
pub(crate) static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local f = ARGV[4]
if redis.call('HDEL', dead_key, f) == 0 then return 0 end
local t, id = split(f)
redis.call('XACK', skey(t), group, id)
redis.call('ZREM', due_key, f)
redis.call('HINCRBY', meta_key, 'dead_lettered', 1)
local dt, line = ARGV[5], ARGV[7]
local dk = skey(dt)
if redis.call('SADD', prefix .. 'topics', dt) == 1 then
  redis.call('XADD', prefix .. 'topics:new', 'MAXLEN', '~', 1000, '*', 't', dt)
end
local added = redis.pcall('XADD', dk, ARGV[6] .. '-*', 'e', line)
if type(added) == 'table' and added.err then
  local top = string.match(last_id(dk), '^(%d+)-')
  local info = redis.call('XINFO', 'STREAM', dk)
  for j = 1, #info, 2 do
    if info[j] == 'last-generated-id' then top = string.match(info[j + 1], '^(%d+)-') end
  end
  added = redis.call('XADD', dk, top .. '-*', 'e', line)
end
redis.call('HINCRBY', prefix .. '{' .. dt .. '}:m', 'bytes', #line + 1)
return added
"#,
    )
});

/// The figures of the group's consumer groups. ARGV 4…: the group's topics.
/// Returns per topic `{has group (0/1), pending, parked, last delivered id}`,
/// then the marks awaiting their dead letter.
pub(crate) static INFO: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local out = {}
for i = 4, #ARGV do
  local k = skey(ARGV[i])
  local s = redis.pcall('XPENDING', k, group)
  if type(s) ~= 'table' or s.err then
    out[#out + 1] = {0, 0, 0, '0-0'}
  else
    local parked = 0
    if s[4] then
      for _, c in ipairs(s[4]) do
        if c[1] == WAITING then parked = tonumber(c[2]) end
      end
    end
    local last = '0-0'
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', k)) do
      local name, at = nil, nil
      for j = 1, #g, 2 do
        if g[j] == 'name' then name = g[j + 1] end
        if g[j] == 'last-delivered-id' then at = g[j + 1] end
      end
      if name == group then last = at end
    end
    out[#out + 1] = {1, tonumber(s[1]), parked, last}
  end
end
out[#out + 1] = redis.call('HLEN', dead_key)
return out
"#,
    )
});

/// Deletes the group: its consumer groups on the streams of ARGV 4… and its
/// keys. Returns 1 if it existed.
pub(crate) static DELETE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
for i = 4, #ARGV do redis.pcall('XGROUP', 'DESTROY', skey(ARGV[i]), group) end
local existed = redis.call('EXISTS', meta_key)
redis.call('DEL', meta_key, members_key, due_key, dead_key, wake_key, released_key)
redis.call('SREM', prefix .. 'groups', group)
return existed
"#,
    )
});
