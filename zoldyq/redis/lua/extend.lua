-- ARGV 4 lease id, 5 seconds from now (µs). Reply {0, outbox, lease_expires_at} or {-4, ...}.
local now = begin()
if not now then return {-1, 0} end
if not redis.call('ZSCORE', EXPIRY, ARGV[4]) then return {-4, pending()} end
local exp = now + tonumber(ARGV[5])
redis.call('ZADD', EXPIRY, 'XX', exp, ARGV[4])
return {0, pending(), exp}
