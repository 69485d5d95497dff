-- Drop every ready, delayed and leased message. Reply {0, outbox, n}.
local now = begin()
if not now then return {-1, 0} end
local n = queue_size()
redis.call('DEL', READY, DELAYED, LEASED, EXPIRY)
redis.call('HSET', STATS, '_bytes', 0)
stat('cleared_total', n)
return {0, pending(), n}
