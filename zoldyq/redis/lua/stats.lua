-- Reply {0, outbox, stats (flat), meta (flat), ready, delayed, leased, oldest ready enqueued_at}.
local now = begin()
if not now then return {-1, 0} end
local head = redis.call('LINDEX', READY, 0)
local oldest = head and struct.unpack('>I8', head, 9) or 0
return {0, pending(), redis.call('HGETALL', STATS), redis.call('HGETALL', META),
  redis.call('LLEN', READY), redis.call('ZCARD', DELAYED), redis.call('HLEN', LEASED),
  oldest, now}
