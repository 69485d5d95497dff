-- ARGV 3 max, 4 lease (µs, 0 = plain get), 5 register as a waiter when empty (0/1).
-- Reply {0, outbox, size, µs to next due, lease_expires_at, rec1, ...}, each record
-- followed by its lease id when leased.
local lease = tonumber(ARGV[4])
local now = begin(lease == 0)  -- a plain get with nothing scheduled needs no clock
if not now then return {-1, 0} end
local recs = redis.call('LPOP', READY, tonumber(ARGV[3]))
local out = {0, 0, 0, -1, 0}
if recs then
  if lease == 0 then
    local freed = 0
    for _, rec in ipairs(recs) do
      freed = freed + cost(rec)
      out[#out + 1] = rec
    end
    charge(-#recs, -freed)
    add(BYTES_OUT_TOTAL, freed - #recs * OVERHEAD)
  else
    local exp, held, due = now + lease, {}, {}
    out[5] = exp
    for _, rec in ipairs(recs) do
      local count = struct.unpack('>I4', rec, 17) + 1
      local id = string.format('%x.%d', seq_of(rec), count)
      rec = with_count(rec, count)
      held[#held + 1], held[#held + 2] = id, rec
      due[#due + 1], due[#due + 2] = exp, id
      out[#out + 1], out[#out + 2] = rec, id
    end
    push('HSET', LEASED, held)
    push('ZADD', EXPIRY, due)
    schedule(exp)
  end
  add(DEQUEUED_TOTAL, #recs)
elseif ARGV[5] == '1' then
  add(WAITERS, 1)
end
out[3], out[4] = st[SIZE], next_due(now)
return done(out)
