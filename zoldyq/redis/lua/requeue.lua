-- ARGV 3.. records taken by plain gets, in order: back at the head, caps not checked
-- (they were accepted once; nothing accepted is dropped).
local now = begin()
if not now then return {-1, 0} end
local recs, add_bytes = {}, 0
for i = #ARGV, 3, -1 do
  recs[#recs + 1] = ARGV[i]
  add_bytes = add_bytes + cost(ARGV[i])
end
if #recs > 0 then push('LPUSH', READY, recs) end
charge(#recs, add_bytes)
add(DEQUEUED_TOTAL, -#recs)
notify(#recs)
return done({0, 0, st[SIZE]})
