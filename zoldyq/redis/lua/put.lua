-- ARGV 3 deliver_at (µs, 0 = now), 4 kinds (one byte per record), 5.. payloads.
-- All of them or none. Reply {0, outbox, size, enqueued_at, deliver_at (0: now)}.
local now = begin()
if not now then return {-1, 0} end
local kinds, n, add_bytes = ARGV[4], #ARGV - 4, 0
for i = 5, #ARGV do
  if #ARGV[i] > st[MAX_MESSAGE_BYTES] then return done({-2, 0, #ARGV[i], st[MAX_MESSAGE_BYTES]}) end
  add_bytes = add_bytes + #ARGV[i] + OVERHEAD
end
if st[SIZE] + n > st[MAX_MESSAGES] or st[BYTES] + add_bytes > st[MAX_BYTES] then
  stat('queue_full_total', 1)
  return done({-3, 0, st[SIZE], st[MAX_MESSAGES], st[MAX_BYTES], add_bytes})
end
-- each record's header is HDR: its seq, then the same enqueued_at and count 0 for all,
-- its kind and origin length 0 (packed piecewise: the loop is most of a batch's cost)
local at, seq, recs = tonumber(ARGV[3]), st[SEQ], {}
local same, pack, sub = struct.pack('>I8I4', now, 0), struct.pack, string.sub
for i = 1, n do
  recs[i] = pack('>I8', seq + i) .. same .. sub(kinds, i, i) .. '\0' .. ARGV[i + 4]
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
