-- ARGV 3 max. Moves up to max ready dead letters into the outbox, bound for the
-- queue each came from (kept at the head if it has no origin). Reply {0, outbox, moved}.
local now = begin()
if not now then return {-1, 0} end
local recs = redis.call('LPOP', READY, tonumber(ARGV[3]))
local moved, keep = 0, {}
for _, rec in ipairs(recs or {}) do
  local _, _, _, _, olen = struct.unpack(HDR, rec)
  if olen > 0 then
    local origin = string.sub(rec, HDRLEN + 1, HDRLEN + olen)
    redis.call('HSET', OUTBOX, 'r|' .. origin .. '|' .. string.format('%d', seq_of(rec)), rec)
    charge(-1, -cost(rec))
    moved = moved + 1
  else
    keep[#keep + 1] = rec
  end
end
if moved > 0 and st[PARKED] == 0 then add(PARKED, 1) end
moves().to_head(keep)
return done({0, 0, moved})
