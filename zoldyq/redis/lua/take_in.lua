-- ARGV 3 mode (d: dead letter, r: redrive), 4 inbox id, 5 record. Idempotent: an id
-- already taken in is skipped (the sender crashed before clearing its outbox).
-- Caps are not checked: a message on its way between queues is never dropped.
local now = begin()
if not now then return {-1, 0} end
redis.call('ZREMRANGEBYSCORE', INBOX, '-inf', now - 3600000000)  -- ids are kept an hour
if redis.call('ZSCORE', INBOX, ARGV[4]) then return done({0, 0, 0}) end
local rec = ARGV[5]
add(SEQ, 1)
local _, enq, count, kind, olen = struct.unpack(HDR, rec)
local data = string.sub(rec, HDRLEN + olen + 1)
local origin = string.sub(rec, HDRLEN + 1, HDRLEN + olen)
if ARGV[3] == 'r' then origin, count = '', 0 end
rec = struct.pack(HDR, st[SEQ], enq, count, kind, #origin) .. origin .. data
redis.call('RPUSH', READY, rec)
redis.call('ZADD', INBOX, now, ARGV[4])
charge(1, cost(rec))
add(ENQUEUED_TOTAL, 1)
notify(1)
return done({0, 0, 1})
