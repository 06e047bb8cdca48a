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

/// Deletes the given records of a state topic: their stream entries (the
/// topic's bytes lowered by their sizes) and their kept versions, together.
///
/// KEYS: stream, meta hash, versions hash. ARGV: triples of (id, size,
/// versions field `<entity id>\n<version>`). Returns how many entries were deleted.
pub(crate) static DELETE_STATE_ENTRIES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = 0
local bytes = 0
for i = 1, #ARGV, 3 do
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then
    n = n + 1
    bytes = bytes + tonumber(ARGV[i + 1])
  end
  redis.call('HDEL', KEYS[3], ARGV[i + 2])
end
if bytes > 0 then redis.call('HINCRBY', KEYS[2], 'bytes', -bytes) end
return n
"#,
    )
});

/// Reads kept versions of a state type: KEYS: versions hash, stream; ARGV:
/// versions fields `<entity id>\n<version>`. Returns per field `{stream id,
/// line}`, nil if that version is not kept, or `{'', value}` if the value
/// is not as written or its stream entry is gone (corrupt data). A value is
/// `<stream id> <bytes>`, the line the stream entry's, or (written by an
/// older build) `<stream id> <line>`.
pub(crate) static READ_VERSIONS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local out = {}
for i = 1, #ARGV do
  out[i] = false
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then
    out[i] = {'', v}
    local sid, rest = string.match(v, '^(%S+) (.*)$')
    if sid and string.sub(rest, 1, 1) == '{' then
      out[i] = {sid, rest}
    elseif sid and string.match(rest, '^%d+$') then
      local e = redis.call('XRANGE', KEYS[2], sid, sid)
      if #e > 0 then
        local fields = e[1][2]
        for f = 1, #fields, 2 do
          if fields[f] == 'e' then out[i] = {sid, fields[f + 1]} end
        end
      end
    end
  end
end
return out
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
/// The Lua function the state scripts begin with: `store(line, layout)`
/// appends a change event (ARGV: topic, entity id, …, new version, event ms,
/// …, the version falling out of the history (`0`: none)) to the stream,
/// makes it the entity's newest record (with `layout`, see [`EDIT_STATE`])
/// and a kept version (`<stream id> <bytes>`: the line is the stream
/// entry's; a value written before, `<stream id> <line>`, is read too),
/// drops the version past the history and counts the
/// bytes (`size`, when given, is the line's length plus one as text, which
/// spares Redis formatting a Lua number); returns the new stream id. With `known`, the topic is in the topic
/// set already (it is from the first record of any entity on, and no topic
/// ever leaves the set).
const STORE_STATE: &str = r#"
local function store(line, layout, known, size)
  if not known and redis.call('SADD', KEYS[3], ARGV[1]) == 1 then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', 1000, '*', 't', ARGV[1])
  end
  local id = redis.pcall('XADD', KEYS[1], ARGV[5] .. '-*', 'e', line, 'k', ARGV[2])
  if type(id) == 'table' and id.err then
    local info = redis.call('XINFO', 'STREAM', KEYS[1])
    local top = nil
    for j = 1, #info, 2 do
      if info[j] == 'last-generated-id' then top = info[j + 1] end
    end
    id = redis.call('XADD', KEYS[1], string.match(top, '^(%d+)-') .. '-*', 'e', line, 'k', ARGV[2])
  end
  local bytes = #line + 1
  redis.call('HSET', KEYS[5], ARGV[2], ARGV[4] .. ' ' .. id .. ' ' .. layout .. ' ' .. line)
  redis.call('HSET', KEYS[6], ARGV[2] .. '\n' .. ARGV[4], id .. ' ' .. (size or bytes))
  if ARGV[7] ~= '0' then
    local field = ARGV[2] .. '\n' .. ARGV[7]
    local old = redis.call('HGET', KEYS[6], field)
    if old then
      redis.call('HDEL', KEYS[6], field)
      local oid, rest = string.match(old, '^(%S+) (.*)$')
      local osize = tonumber(rest)
      if string.sub(rest, 1, 1) == '{' then osize = #rest + 1 end
      if redis.call('XDEL', KEYS[1], oid) == 1 then
        bytes = bytes - osize
        size = nil
      end
    end
  end
  redis.call('HINCRBY', KEYS[2], 'bytes', size or bytes)
  return id
end
"#;

/// Puts a state change computed by the client.
///
/// KEYS: stream, meta hash, topic set, new-topic stream, latest hash, versions hash.
/// ARGV: topic, entity id, expected version, new version, event ms, event
/// JSON line, the version falling out of the history (`0`: none), the
/// event's id (to recognise a retry whose first try landed), the line's
/// layout, the line's length plus one.
///
/// A latest value is `<version> <stream id> <layout> <line>`, a versions
/// value `<stream id> <bytes>` (the line's length plus one; the line is in
/// the stream) under the field `<entity id>\n<version>`.
/// Returns `{1, stream id}`, or `{0, newest version}` on a conflict.
pub(crate) static PUT_STATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{STORE_STATE}
local cur = redis.call('HGET', KEYS[5], ARGV[2])
local curv = '0'
if cur then curv = string.match(cur, '^(%d+) ') end
if curv ~= ARGV[3] then
  if curv == ARGV[4] and string.find(cur, '{{"id":"' .. ARGV[8] .. '"', 1, true) then
    return {{1, string.match(cur, '^%d+ (%S+) ')}}
  end
  return {{0, curv}}
end
return {{1, store(ARGV[6], ARGV[9], cur ~= false and cur ~= nil, ARGV[10])}}
"#
    ))
});

/// Applies a [`seed_event::StateEdit`] to the entity's newest record, on the
/// server: one round trip for a compare-and-set update.
///
/// KEYS: as [`PUT_STATE`]'s. ARGV: topic, entity id, expected version, new
/// version, now's ms, now (a JSON string), the version falling out of the
/// history (`0`: none), the new event's id, the new status (a JSON string,
/// `""`: keep), the statuses that may become it (` "a" "b" `), the data's
/// edit (`k`eep, `r`eplace, `m`erge), the data or patch, the new metadata
/// (`""`: keep), the template's holes, one letter each (`s`tatus, `d`ata,
/// `m`etadata, `c`reated_at, `u`pdated_at), then its texts.
///
/// Returns `{1, stream id, line}` when applied (also to a retry whose first
/// try landed), `{0, newest latest value}` (or `{0}` if none) when not.
///
/// The newest record's fields are found by its layout in the latest hash,
/// `L` (`D` for a tombstone) and the 1-based first and last byte of the
/// state's status, data, created_at, updated_at and metadata in the line
/// (`-`, or none in a value written before layouts: not edited here). JSON
/// is read in the compact form `serde_json` writes, values kept as text;
/// objects are compared by members (a float `-0.0` and `0.0` differ here),
/// and merges keep `serde_json`'s order.
pub(crate) static EDIT_STATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{STORE_STATE}
local cur = redis.call('HGET', KEYS[5], ARGV[2])
if not cur then return {{0}} end
local curv, curid, layout, base = string.match(cur, '^(%d+) (%S+) (%S+) ()')
if curv ~= ARGV[3] then
  if curv == ARGV[4] and string.find(cur, ' {{"id":"' .. ARGV[8] .. '"', 1, true) then
    return {{1, curid, string.sub(cur, base)}}
  end
  return {{0, cur}}
end
local live, s1, s2, d1, d2, c1, c2, u1, u2, m1, m2 = string.match(layout,
  '^(%a)(%d+),(%d+),(%d+),(%d+),(%d+),(%d+),(%d+),(%d+),(%d+),(%d+)$')
if live ~= 'L' then return {{0, cur}} end
-- Positions in the line are positions in cur past its header.
base = base - 1
local line = cur
local find, sub, byte = string.find, string.sub, string.byte
-- The JSON helpers, made only when a change has to read JSON.
local function json()
  local function skip_string(s, i)
    local j = i + 1
    while true do
      local k = find(s, '["\\]', j)
      if not k then error('bad JSON string') end
      if byte(s, k) == 34 then return k + 1 end
      j = k + 2
    end
  end
  local function skip(s, i)
    local c = byte(s, i)
    if c == 34 then return skip_string(s, i) end
    if c == 123 or c == 91 then
      local depth, j = 0, i
      while true do
        local k = find(s, '["{{}}%[%]]', j)
        if not k then error('bad JSON value') end
        local d = byte(s, k)
        if d == 34 then
          j = skip_string(s, k)
        else
          if d == 123 or d == 91 then depth = depth + 1 else depth = depth - 1 end
          j = k + 1
          if depth == 0 then return j end
        end
      end
    end
    return find(s, '[,}}%]]', i) or (#s + 1)
  end
  local function members(s)
    local keys, vals = {{}}, {{}}
    if byte(s, 2) == 125 then return keys, vals end
    local j = 2
    while true do
      local e = skip_string(s, j)
      local k = sub(s, j, e - 1)
      local ve = skip(s, e + 1)
      keys[#keys + 1] = k
      vals[k] = sub(s, e + 1, ve - 1)
      if byte(s, ve) == 125 then return keys, vals end
      j = ve + 1
    end
  end
  local function elements(s)
    local out = {{}}
    if byte(s, 2) == 93 then return out end
    local j = 2
    while true do
      local e = skip(s, j)
      out[#out + 1] = sub(s, j, e - 1)
      if byte(s, e) == 93 then return out end
      j = e + 1
    end
  end
  local function same(a, b)
    if a == b then return true end
    if #a ~= #b then return false end
    local c = byte(a, 1)
    if c ~= byte(b, 1) then return false end
    if c == 123 then
      local ak, av = members(a)
      local bk, bv = members(b)
      if #ak ~= #bk then return false end
      for _, k in ipairs(ak) do
        if not bv[k] or not same(av[k], bv[k]) then return false end
      end
      return true
    elseif c == 91 then
      local ae, be = elements(a), elements(b)
      if #ae ~= #be then return false end
      for n = 1, #ae do
        if not same(ae[n], be[n]) then return false end
      end
      return true
    end
    return false
  end
  local function merge(target, patch)
    local tk, tv = members(target)
    local pos = {{}}
    for n, k in ipairs(tk) do pos[k] = n end
    local pk, pv = members(patch)
    for _, k in ipairs(pk) do
      local v = pv[k]
      if v == 'null' then
        local n = pos[k]
        if n then
          local last = tk[#tk]
          tk[n] = last
          pos[last] = n
          tk[#tk] = nil
          pos[k] = nil
          tv[k] = nil
        end
      else
        local old = tv[k]
        if not old then
          tk[#tk + 1] = k
          pos[k] = #tk
        end
        if byte(v, 1) == 123 then
          if not old or byte(old, 1) ~= 123 then old = '{{}}' end
          v = merge(old, v)
        end
        tv[k] = v
      end
    end
    local out = {{}}
    for n, k in ipairs(tk) do out[n] = k .. ':' .. tv[k] end
    return '{{' .. table.concat(out, ',') .. '}}'
  end
  return same, merge
end
-- Whether a and b, JSON values of the same length, may be equal as values
-- though they differ in bytes: only if objects with several members may be
-- ordered differently, so never without a comma.
local function maybe_same(a, b)
  return a == b or (#a == #b and find(a, ',', 1, true) and json()(a, b))
end
local status0 = sub(line, base + s1, base + s2)
if status0 == '"archived"' then return {{0, cur}} end
local status = status0
if ARGV[9] ~= '' then
  if not find(ARGV[10], ' ' .. status0 .. ' ', 1, true) then return {{0, cur}} end
  status = ARGV[9]
end
local changed = status ~= status0
local data0 = sub(line, base + d1, base + d2)
local data = data0
if ARGV[11] == 'r' then
  data = ARGV[12]
elseif ARGV[11] == 'm' then
  local _, merge = json()
  data = merge(data0, ARGV[12])
end
changed = changed or not maybe_same(data, data0)
local meta0 = sub(line, base + m1, base + m2)
local meta = meta0
if ARGV[13] ~= '' then meta = ARGV[13] end
changed = changed or not maybe_same(meta, meta0)
if not changed then return {{0, cur}} end
local updated = ARGV[6]
local curms = string.match(curid, '^(%d+)')
-- The newest record is at most as late as its stream id's ms: now is later if past that.
if tonumber(ARGV[5]) <= tonumber(curms) then
  local was = sub(line, base + u1, base + u2)
  local ad, bd = string.gsub(was, '%D', ''), string.gsub(updated, '%D', '')
  local a1, b1 = tonumber(sub(ad, 1, 10)), tonumber(sub(bd, 1, 10))
  if a1 > b1 or (a1 == b1 and tonumber(sub(ad, 11, 20)) > tonumber(sub(bd, 11, 20))) then
    updated = was
    ARGV[5] = curms
  end
end
local fill = {{s = status, d = data, m = meta, c = sub(line, base + c1, base + c2), u = updated}}
local holes = ARGV[14]
local at = {{}}
local parts = {{ARGV[15]}}
local n = #ARGV[15]
for j = 1, #holes do
  local h = sub(holes, j, j)
  local part = fill[h]
  if not at[h] then at[h] = n end
  local text = ARGV[15 + j]
  parts[2 * j] = part
  parts[2 * j + 1] = text
  n = n + #part + #text
end
local new = table.concat(parts)
local layout = string.format('L%d,%d,%d,%d,%d,%d,%d,%d,%d,%d',
  at.s + 1, at.s + #status, at.d + 1, at.d + #data, at.c + 1, at.c + #fill.c,
  at.u + 1, at.u + #updated, at.m + 1, at.m + #meta)
return {{1, store(new, layout, true), new}}
"#
    ))
});
