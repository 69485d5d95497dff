-- ARGV 3 max (-1: all). Reply {0, outbox, rec...}; nothing is removed.
local now = begin()
if not now then return {-1, 0} end
local n = tonumber(ARGV[3])
local out = redis.call('LRANGE', READY, 0, n < 0 and -1 or n - 1)
table.insert(out, 1, 0)
table.insert(out, 1, 0)
return done(out)
