-- Shared prelude of every ZoldyQ queue script (zoldyq/redis/scripts.py prepends it, after
-- the state record's field names from zoldyq/redis/state.py).
--
-- KEYS (all under the queue's hash tag {ns:queue}, so one Cluster slot):
--   1 meta    hash: name, caps, max_deliveries, dlq, created_at, bell (wake-up channel)
--   2 ready   list of records, head first
--   3 delayed zset record -> deliver_at (µs); nacked-with-delay ones too
--   4 leased  hash lease_id -> record
--   5 expiry  zset lease_id -> lease_expires_at (µs)
--   6 outbox  hash "mode|dest|seq" -> record, on its way to another queue
--   7 stats   hash: the rarer counters and the latency histograms
--   8 inbox   zset of ids taken in from other queues' outboxes -> when (µs)
--   9 state   string: the running state record (state.py), read once and written once
-- ARGV 1 clock override (µs, 0 = the server's TIME), 2 histogram deltas "field:n,...",
--      then the script's own arguments.
-- A record is struct HDR (seq, enqueued_at, delivery_count, kind, origin length),
-- then the origin queue's name (dead letters only), then the payload as sent.
-- Every reply starts {status, outbox_pending}; scripts end with done(reply).
-- Redis commands are the cost here: each one is counted, and helpers that only the
-- rarer paths need are built by moves() on first use.
local META, READY, DELAYED, LEASED, EXPIRY, OUTBOX, STATS, INBOX, STATE =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local HDR, HDRLEN, OVERHEAD = '>I8I8I4BB', 22, 16
local st, dirty  -- the state record as a table of numbers; changed since read?

local function load()
  local raw = redis.call('GET', STATE)
  if not raw then return false end
  st, dirty = {struct.unpack(STATE_FMT, raw)}, false
  return true
end

local function add(field, n)
  if n ~= 0 then st[field], dirty = st[field] + n, true end
end

-- a record enters (count 1) or leaves (-1) the queue's bounded total
local function charge(count, bytes)
  add(SIZE, count)
  add(BYTES, bytes)
end

-- a delayed message or lease now falls due at `at`: keep DUE a lower bound
local function schedule(at)
  if st[DUE] == 0 or at < st[DUE] then st[DUE], dirty = at, true end
end

-- the reply, with the outbox flag, after writing the state back if it changed
local function done(reply)
  if dirty then redis.call('SET', STATE, struct.pack(STATE_FMT, unpack(st, 1, NFIELDS))) end
  reply[2] = st[PARKED]
  return reply
end

local function clock()
  local t = tonumber(ARGV[1])
  if t > 0 then return t end
  local tm = redis.call('TIME')
  return tonumber(tm[1]) * 1000000 + tonumber(tm[2])
end

local function seq_of(rec) return (struct.unpack('>I8', rec)) end

-- bytes a record is charged: its payload plus 16, whatever the header holds
local function cost(rec)
  local _, _, _, _, olen = struct.unpack(HDR, rec)
  return #rec - HDRLEN - olen + OVERHEAD
end

local function with_count(rec, count, origin)
  local seq, enq, _, kind, olen = struct.unpack(HDR, rec)
  local data = string.sub(rec, HDRLEN + olen + 1)
  origin = origin or string.sub(rec, HDRLEN + 1, HDRLEN + olen)
  return struct.pack(HDR, seq, enq, count, kind, #origin) .. origin .. data
end

-- the rarer counters, in the stats hash
local function stat(field, n)
  if n ~= 0 then redis.call('HINCRBY', STATS, field, n) end
end

local function notify(n)
  if n > 0 and st[WAITERS] > 0 then
    local m = redis.call('HMGET', META, 'bell', 'name')
    redis.call('PUBLISH', m[1], m[2])
  end
end

-- send many values in chunks (Lua's unpack has a stack limit)
local function push(cmd, key, values)
  for i = 1, #values, 500 do
    redis.call(cmd, key, unpack(values, i, math.min(i + 499, #values)))
  end
end

-- ids that `ids` holds in LEASED, removed from LEASED and EXPIRY: {id -> record}
local function unlease(ids)
  local held, found = {}, {}
  if #ids == 0 then return held end
  for i = 1, #ids, 500 do
    local part = {unpack(ids, i, math.min(i + 499, #ids))}
    local recs = redis.call('HMGET', LEASED, unpack(part))
    for j, rec in ipairs(part) do
      if recs[j] then
        held[rec] = recs[j]
        found[#found + 1] = rec
      end
    end
  end
  if #found > 0 then
    push('HDEL', LEASED, found)
    push('ZREM', EXPIRY, found)
  end
  return held
end

local function moves()
  local m = {}

  -- give records back at the head, in order of first enqueue: merged with the run of
  -- older records already at the head (earlier give-backs, late delayed ones), ahead
  -- of newer ones
  function m.to_head(recs)
    if #recs == 0 then return end
    table.sort(recs, function(a, b) return seq_of(a) < seq_of(b) end)
    local top, older = seq_of(recs[#recs]), {}
    for _ = 1, 1000 do
      local head = redis.call('LINDEX', READY, 0)
      if not head or seq_of(head) > top then break end
      older[#older + 1] = redis.call('LPOP', READY)
    end
    for _, rec in ipairs(older) do recs[#recs + 1] = rec end
    table.sort(recs, function(a, b) return seq_of(a) > seq_of(b) end)
    push('LPUSH', READY, recs)
  end

  -- park a record in the outbox for the dead-letter queue (flushed by the client)
  function m.dead_letter(rec)
    local meta = redis.call('HMGET', META, 'name', 'dlq')
    redis.call('HSET', OUTBOX, 'd|' .. meta[2] .. '|' .. string.format('%d', seq_of(rec)),
      with_count(rec, struct.unpack('>I4', rec, 17), meta[1]))
    stat('dead_lettered_total', 1)
    charge(-1, -cost(rec))
    if st[PARKED] == 0 then add(PARKED, 1) end
  end

  -- a record coming back from a lease (nack or expiry): to `back`, or dead-lettered
  function m.give_back(rec, back)
    local count = struct.unpack('>I4', rec, 17)
    if st[MAX_DELIVERIES] > 0 and count >= st[MAX_DELIVERIES] then
      m.dead_letter(rec)
      return false
    end
    back[#back + 1] = rec
    return true
  end

  -- expired leases back to the head (or dead letters), due delayed messages to the queue;
  -- then DUE is exact again
  function m.reclaim(now)
    local back = {}
    local due = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', now, 'LIMIT', 0, 1000)
    local held = unlease(due)
    for _, id in ipairs(due) do
      if held[id] then m.give_back(held[id], back) end
    end
    stat('redelivered_total', #back)
    local ripe = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now, 'LIMIT', 0, 1000)
    local fresh = {}
    for _, rec in ipairs(ripe) do
      if struct.unpack('>I4', rec, 17) > 0 then back[#back + 1] = rec else fresh[#fresh + 1] = rec end
    end
    if #ripe > 0 then push('ZREM', DELAYED, ripe) end
    if #fresh > 0 then push('RPUSH', READY, fresh) end
    m.to_head(back)
    notify(#back + #fresh)
    local soonest = 0
    for _, key in ipairs({DELAYED, EXPIRY}) do
      local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      if first[2] then
        local at = tonumber(first[2])
        if soonest == 0 or at < soonest then soonest = at end
      end
    end
    st[DUE], dirty = soonest, true
  end

  return m
end

-- µs until the next delayed message or lease may fall due (-1: none)
local function next_due(now)
  if st[DUE] == 0 then return -1 end
  return math.max(0, st[DUE] - now)
end

-- the prologue of every script on an existing queue: its state, the time, what fell due.
-- `timeless`: the script needs the time only if something may fall due (else now is 0)
local function begin(timeless)
  if not load() then return nil end
  if ARGV[2] ~= '' then
    for f, n in string.gmatch(ARGV[2], '([^:,]+):(%d+)') do redis.call('HINCRBY', STATS, f, n) end
  end
  if timeless and st[DUE] == 0 then return 0 end
  local now = clock()
  if st[DUE] > 0 and st[DUE] <= now then moves().reclaim(now) end
  return now
end
