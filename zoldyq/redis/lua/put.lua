-- ARGV 3 deliver_at (µs, 0 = now), 4 kinds (one byte per record), 5.. payloads.
-- All of them or none. Reply {0, outbox, size, enqueued_at, deliver_at (0: now)}.
local now = begin()
if not now then return {-1, 0} end
-- each record's header is HDR: its seq, then the same enqueued_at and count 0 for all,
-- its kind and origin length 0 (packed piecewise, in the one pass over the payloads
-- that also sums their size: this loop is most of a batch's cost)
local kinds, n, add_bytes, mmb = ARGV[4], #ARGV - 4, 0, st[MAX_MESSAGE_BYTES]
local at, seq, recs = tonumber(ARGV[3]), st[SEQ], {}
local same, pack, sub = struct.pack('>I8I4', now, 0), struct.pack, string.sub
for i = 1, n do
  local data = ARGV[i + 4]
  if #data > mmb then return done({-2, 0, #data, mmb}) end
  add_bytes = add_bytes + #data + OVERHEAD
  recs[i] = pack('>I8', seq + i) .. same .. sub(kinds, i, i) .. '\0' .. data
end
if st[SIZE] + n > st[MAX_MESSAGES] or st[BYTES] + add_bytes > st[MAX_BYTES] then
  stat('queue_full_total', 1)
  return done({-3, 0, st[SIZE], st[MAX_MESSAGES], st[MAX_BYTES], add_bytes})
end
add(SEQ, n)
if at > now then
  local pairs_ = {}
  for i, rec in ipairs(recs) do pairs_[2 * i - 1], pairs_[2 * i] = at, rec end
  push('ZADD', DELAYED, pairs_)
  schedule(at)
else
  push('RPUSH', READY, recs)
  notify(n)
  at = 0
end
charge(n, add_bytes)
add(ENQUEUED_TOTAL, n)
add(BYTES_IN_TOTAL, add_bytes - n * OVERHEAD)
return done({0, 0, st[SIZE], now, at})
