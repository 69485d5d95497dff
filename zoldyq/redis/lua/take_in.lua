-- ARGV 4 mode (d: dead letter, r: redrive), 5 inbox id, 6 record. Idempotent: an id
-- already taken in is skipped (the sender crashed before clearing its outbox).
-- Caps are not checked: a message on its way between queues is never dropped.
local now = begin()
if not now then return {-1, 0} end
redis.call('ZREMRANGEBYSCORE', INBOX, '-inf', now - 3600000000)  -- ids are kept an hour
if redis.call('ZSCORE', INBOX, ARGV[5]) then return {0, pending(), 0} end
local rec = ARGV[6]
local seq = redis.call('HINCRBY', STATS, '_seq', 1)
local _, enq, count, kind, olen = struct.unpack(HDR, rec)
local data = string.sub(rec, HDRLEN + olen + 1)
local origin = string.sub(rec, HDRLEN + 1, HDRLEN + olen)
if ARGV[4] == 'r' then origin, count = '', 0 end
rec = struct.pack(HDR, seq, enq, count, kind, #origin) .. origin .. data
redis.call('RPUSH', READY, rec)
redis.call('ZADD', INBOX, now, ARGV[5])
stat('enqueued_total', 1)
stat('_bytes', cost(rec))
notify(1)
return {0, pending(), 1}
