-- Reply {0, outbox, stats (flat), meta (flat), state record, ready, delayed, leased,
-- oldest ready enqueued_at, now}.
local now = begin()
if not now then return {-1, 0} end
done({})  -- what begin() reclaimed is in the state record read below
local head = redis.call('LINDEX', READY, 0)
local oldest = head and struct.unpack('>I8', head, 9) or 0
return {0, st[PARKED], redis.call('HGETALL', STATS), redis.call('HGETALL', META),
  redis.call('GET', STATE), redis.call('LLEN', READY), redis.call('ZCARD', DELAYED),
  redis.call('HLEN', LEASED), oldest, now}
