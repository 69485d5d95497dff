-- ARGV 4 lease id, 5 delay (µs). Reply {0, outbox, dead_lettered (0/1), dlq} or {-4, ...}.
local now = begin()
if not now then return {-1, 0} end
local rec = redis.call('HGET', LEASED, ARGV[4])
if not rec then return {-4, pending()} end
redis.call('HDEL', LEASED, ARGV[4])
redis.call('ZREM', EXPIRY, ARGV[4])
local back = {}
if not give_back(rec, back) then
  return {0, pending(), 1, redis.call('HGET', META, 'dlq')}
end
stat('redelivered_total', 1)
local delay = tonumber(ARGV[5])
if delay > 0 then
  redis.call('ZADD', DELAYED, now + delay, rec)
else
  to_head(back)
  notify(1)
end
return {0, pending(), 0, ''}
