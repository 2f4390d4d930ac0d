-- Renews a task lock held by this worker: resets its time to live when the key still
-- holds our token (the redis-py Lock `reacquire` protocol, so Python workers interoperate).
-- KEYS: 1 lock   ARGV: 1 token, 2 time to live in ms
-- Returns 1 when renewed, 0 when the lock is gone or held by someone else.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
