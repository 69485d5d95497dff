-- ARGV 4.. records taken by plain gets, in order: back at the head, caps not checked
-- (they were accepted once; nothing accepted is dropped).
local now = begin()
if not now then return {-1, 0} end
local recs, add = {}, 0
for i = #ARGV, 4, -1 do
  recs[#recs + 1] = ARGV[i]
  add = add + cost(ARGV[i])
end
if #recs > 0 then push('LPUSH', READY, recs) end
stat('_bytes', add)
stat('dequeued_total', -#recs)
notify(#recs)
return {0, pending(), queue_size()}
