-- ARGV 3 outbox field: the client delivered it to its destination; the outbox flag
-- goes down when nothing else is parked. Reply {0, outbox}.
if not load() then return {-1, 0} end
redis.call('HDEL', OUTBOX, ARGV[3])
if st[PARKED] ~= 0 and redis.call('EXISTS', OUTBOX) == 0 then st[PARKED], dirty = 0, true end
return done({0, 0})
