-- ARGV 4.. meta field, value pairs (name, caps, created_at...). Creates the queue's
-- keys unless they exist. Reply {0, 0, created (0/1)}.
if redis.call('EXISTS', META) == 1 then return {0, 0, 0} end
redis.call('HSET', META, unpack(ARGV, 4))
local created = tonumber(redis.call('HGET', META, 'created_at'))
redis.call('HSETNX', STATS, '_seq', created)  -- lease ids stay unique across re-creations
return {0, 0, 1}
