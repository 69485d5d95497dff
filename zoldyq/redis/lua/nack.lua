-- ARGV 3 lease id, 4 delay (µs). Reply {0, outbox, dead_lettered (0/1), dlq} or {-4, ...}.
local now = begin()
if not now then return {-1, 0} end
local rec = unlease({ARGV[3]})[ARGV[3]]
if not rec then return done({-4, 0}) end
local m, back = moves(), {}
if not m.give_back(rec, back) then
  return done({0, 0, 1, redis.call('HGET', META, 'dlq')})
end
stat('redelivered_total', 1)
local delay = tonumber(ARGV[4])
if delay > 0 then
  redis.call('ZADD', DELAYED, now + delay, rec)
  schedule(now + delay)
else
  m.to_head(back)
  notify(1)
end
return done({0, 0, 0, ''})
