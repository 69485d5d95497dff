-- ARGV 3.. lease ids. Reply {0, outbox, acked, not_held...}.
local now = begin()
if not now then return {-1, 0} end
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
local held = unlease(ids)
local out, acked, freed = {0, 0, 0}, 0, 0
for _, id in ipairs(ids) do
  local rec = held[id]
  if rec then
    held[id] = nil  -- the same id twice is acked once
    acked = acked + 1
    freed = freed + cost(rec)
  else
    out[#out + 1] = id
  end
end
charge(-acked, -freed)
add(ACKED_TOTAL, acked)
add(BYTES_OUT_TOTAL, freed - acked * OVERHEAD)
out[3] = acked
return done(out)
