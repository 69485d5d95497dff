-- ARGV 3.. meta field, value pairs (name, caps, created_at, bell...). Creates the
-- queue's keys unless they exist. Reply {0, 0, created (0/1)}.
if redis.call('EXISTS', STATE) == 1 then return {0, 0, 0} end
redis.call('HSET', META, unpack(ARGV, 3))
local m = redis.call('HMGET', META, 'max_messages', 'max_bytes', 'max_message_bytes',
  'max_deliveries', 'created_at')
st = {}
for i = 1, NFIELDS do st[i] = 0 end
st[MAX_MESSAGES], st[MAX_BYTES], st[MAX_MESSAGE_BYTES], st[MAX_DELIVERIES] =
  tonumber(m[1]), tonumber(m[2]), tonumber(m[3]), tonumber(m[4])
st[SEQ], dirty = tonumber(m[5]), true  -- lease ids stay unique across re-creations
done({})
return {0, 0, 1}
