-- ARGV 4.. lease ids. Reply {0, outbox, acked, not_held...}.
local now = begin()
if not now then return {-1, 0} end
local out, acked, freed = {0, 0, 0}, 0, 0
for i = 4, #ARGV do
  local rec = redis.call('HGET', LEASED, ARGV[i])
  if rec then
    redis.call('HDEL', LEASED, ARGV[i])
    redis.call('ZREM', EXPIRY, ARGV[i])
    acked = acked + 1
    freed = freed + cost(rec)
  else
    out[#out + 1] = ARGV[i]
  end
end
stat('acked_total', acked)
stat('_bytes', -freed)
stat('bytes_out_total', freed - acked * OVERHEAD)
out[2], out[3] = pending(), acked
return out
