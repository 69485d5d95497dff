-- ARGV 3 timed out (0/1): a getter that counted itself as a waiter stops waiting.
if not load() then return {-1, 0} end
add(WAITERS, -1)
if ARGV[3] == '1' then stat('dequeue_timeout_total', 1) end
return done({0, 0})
