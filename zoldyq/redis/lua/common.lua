-- Shared prelude of every ZoldyQ queue script (zoldyq/redis/scripts.py prepends it).
--
-- KEYS (all under the queue's hash tag {ns:queue}, so one Cluster slot):
--   1 meta    hash: name, caps, max_deliveries, dlq, created_at
--   2 ready   list of records, head first
--   3 delayed zset record -> deliver_at (µs); nacked-with-delay ones too
--   4 leased  hash lease_id -> record
--   5 expiry  zset lease_id -> lease_expires_at (µs)
--   6 outbox  hash "mode|dest|seq" -> record, on its way to another queue
--   7 stats   hash: counters, histograms, _bytes (charged), _seq, waiters
--   8 inbox   zset of ids taken in from other queues' outboxes -> when (µs)
-- ARGV 1 clock override (µs, 0 = the server's TIME), 2 wake-up channel,
--      3 histogram deltas "field:n,...", then the script's own arguments.
-- A record is struct HDR (seq, enqueued_at, delivery_count, kind, origin length),
-- then the origin queue's name (dead letters only), then the payload as sent.
-- Every reply starts {status, outbox_pending}.
local META, READY, DELAYED, LEASED, EXPIRY, OUTBOX, STATS, INBOX =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local HDR, HDRLEN, OVERHEAD = '>I8I8I4BB', 22, 16

local function clock()
  local t = tonumber(ARGV[1])
  if t > 0 then return t end
  local tm = redis.call('TIME')
  return tonumber(tm[1]) * 1000000 + tonumber(tm[2])
end

local function seq_of(rec) return (struct.unpack('>I8', rec)) end
local function seq_str(rec) return string.format('%d', seq_of(rec)) end

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

local function stat(field, n)
  if n ~= 0 then redis.call('HINCRBY', STATS, field, n) end
end

local function apply_hist()
  for f, n in string.gmatch(ARGV[3], '([^:,]+):(%d+)') do redis.call('HINCRBY', STATS, f, n) end
end

local function queue_size()
  return redis.call('LLEN', READY) + redis.call('ZCARD', DELAYED) + redis.call('HLEN', LEASED)
end

local function notify(n)
  if n > 0 and tonumber(redis.call('HGET', STATS, 'waiters') or '0') > 0 then
    redis.call('PUBLISH', ARGV[2], redis.call('HGET', META, 'name'))
  end
end

-- push many values in chunks (Lua's unpack has a stack limit)
local function push(cmd, key, values)
  for i = 1, #values, 500 do
    redis.call(cmd, key, unpack(values, i, math.min(i + 499, #values)))
  end
end

-- give records back at the head, in order of first enqueue: merged with the run of
-- older records already at the head (earlier give-backs, late delayed ones), ahead
-- of newer ones
local function to_head(recs)
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
local function dead_letter(rec)
  local m = redis.call('HMGET', META, 'name', 'dlq')
  redis.call('HSET', OUTBOX, 'd|' .. m[2] .. '|' .. seq_str(rec), with_count(rec, struct.unpack('>I4', rec, 17), m[1]))
  stat('dead_lettered_total', 1)
  stat('_bytes', -cost(rec))
end

-- a record coming back from a lease (nack or expiry): to `back`, or dead-lettered
local function give_back(rec, back)
  local maxd = tonumber(redis.call('HGET', META, 'max_deliveries') or '0')
  local count = struct.unpack('>I4', rec, 17)
  if maxd > 0 and count >= maxd then
    dead_letter(rec)
    return false
  end
  back[#back + 1] = rec
  return true
end

-- expired leases back to the head (or dead letters), due delayed messages to the queue
local function reclaim(now)
  local back = {}
  local due = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    local rec = redis.call('HGET', LEASED, id)
    redis.call('HDEL', LEASED, id)
    redis.call('ZREM', EXPIRY, id)
    if rec then give_back(rec, back) end
  end
  stat('redelivered_total', #back)
  local ripe = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now, 'LIMIT', 0, 1000)
  local fresh = {}
  for _, rec in ipairs(ripe) do
    if struct.unpack('>I4', rec, 17) > 0 then back[#back + 1] = rec else fresh[#fresh + 1] = rec end
  end
  if #ripe > 0 then push('ZREM', DELAYED, ripe) end
  if #fresh > 0 then push('RPUSH', READY, fresh) end
  to_head(back)
  notify(#back + #fresh)
end

-- µs until the next delayed message or lease falls due (-1: none)
local function next_due(now)
  local best = -1
  for _, key in ipairs({DELAYED, EXPIRY}) do
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if first[2] then
      local wait = math.max(0, tonumber(first[2]) - now)
      if best < 0 or wait < best then best = wait end
    end
  end
  return best
end

local function pending() return redis.call('EXISTS', OUTBOX) end

-- the prologue of every script on an existing queue
local function begin()
  if redis.call('EXISTS', META) == 0 then return nil end
  local now = clock()
  apply_hist()
  reclaim(now)
  return now
end
