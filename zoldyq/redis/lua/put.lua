-- ARGV 4 deliver_at (µs, 0 = now), then kind, data pairs. All of them or none.
local now = begin()
if not now then return {-1, 0} end
local caps = redis.call('HMGET', META, 'max_messages', 'max_bytes', 'max_message_bytes')
local maxm, maxb, mmb = tonumber(caps[1]), tonumber(caps[2]), tonumber(caps[3])
local n, add = (#ARGV - 4) / 2, 0
for i = 6, #ARGV, 2 do
  if #ARGV[i] > mmb then return {-2, pending(), #ARGV[i], mmb} end
  add = add + #ARGV[i] + OVERHEAD
end
local size = queue_size()
local used = tonumber(redis.call('HGET', STATS, '_bytes') or '0')
if size + n > maxm or used + add > maxb then
  stat('queue_full_total', 1)
  return {-3, pending(), size, maxm, maxb, add}
end
local at = tonumber(ARGV[4])
local seq = redis.call('HINCRBY', STATS, '_seq', n) - n
local recs = {}
for i = 5, #ARGV, 2 do
  seq = seq + 1
  recs[#recs + 1] = struct.pack(HDR, seq, now, 0, tonumber(ARGV[i]), 0) .. ARGV[i + 1]
end
if at > now then
  for _, rec in ipairs(recs) do redis.call('ZADD', DELAYED, at, rec) end
else
  push('RPUSH', READY, recs)
  notify(n)
  at = 0
end
stat('enqueued_total', n)
stat('bytes_in_total', add - n * OVERHEAD)
stat('_bytes', add)
return {0, pending(), size + n, now, at}
