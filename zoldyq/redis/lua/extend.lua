-- ARGV 3 lease id, 4 seconds from now (µs). Reply {0, outbox, lease_expires_at} or {-4, ...}.
local now = begin()
if not now then return {-1, 0} end
if not redis.call('ZSCORE', EXPIRY, ARGV[3]) then return done({-4, 0}) end
local exp = now + tonumber(ARGV[4])
redis.call('ZADD', EXPIRY, 'XX', exp, ARGV[3])
schedule(exp)
return done({0, 0, exp})
