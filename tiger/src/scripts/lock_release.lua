-- Releases a task lock only when it still holds our token (the redis-py Lock protocol).
-- KEYS: 1 lock   ARGV: 1 token
-- Returns 1 when released, 0 when it had expired or was taken over.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
