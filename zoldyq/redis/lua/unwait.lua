-- ARGV 4 timed out (0/1): a getter that counted itself as a waiter stops waiting.
if redis.call('EXISTS', META) == 0 then return {-1, 0} end
stat('waiters', -1)
if ARGV[4] == '1' then stat('dequeue_timeout_total', 1) end
return {0, 0}
