-- Drop every ready, delayed and leased message. Reply {0, outbox, n}.
local now = begin()
if not now then return {-1, 0} end
local n = st[SIZE]
redis.call('DEL', READY, DELAYED, LEASED, EXPIRY)
st[SIZE], st[BYTES], st[DUE], dirty = 0, 0, 0, true
stat('cleared_total', n)
return done({0, 0, n})
