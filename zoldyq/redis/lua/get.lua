-- ARGV 4 max, 5 lease (µs, 0 = plain get), 6 register as a waiter when empty (0/1).
-- Reply {0, outbox, size, µs to next due, lease_expires_at, rec1, lease_id1, ...}.
local now = begin()
if not now then return {-1, 0} end
local recs = redis.call('LPOP', READY, tonumber(ARGV[4]))
local lease = tonumber(ARGV[5])
local out = {0, 0, 0, -1, 0}
if recs then
  if lease == 0 then
    local freed = 0
    for _, rec in ipairs(recs) do
      freed = freed + cost(rec)
      out[#out + 1] = rec
      out[#out + 1] = ''
    end
    stat('_bytes', -freed)
    stat('bytes_out_total', freed - #recs * OVERHEAD)
  else
    local exp = now + lease
    out[5] = exp
    for _, rec in ipairs(recs) do
      local count = struct.unpack('>I4', rec, 17) + 1
      local id = string.format('%x.%d', seq_of(rec), count)
      rec = with_count(rec, count)
      redis.call('HSET', LEASED, id, rec)
      redis.call('ZADD', EXPIRY, exp, id)
      out[#out + 1] = rec
      out[#out + 1] = id
    end
  end
  stat('dequeued_total', #recs)
elseif ARGV[6] == '1' then
  stat('waiters', 1)
end
out[2] = pending()
out[3] = queue_size()
out[4] = next_due(now)
return out
