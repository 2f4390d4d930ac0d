-- Moves a queue's scheduled tasks that are due to its queued zset, at most ARGV[3] of them,
-- earliest first, and announces the queue once if any moved. A task already queued (a
-- unique task queued again meanwhile) only leaves scheduled.
--
-- KEYS: 1 scheduled zset, 2 queued zset, 3 scheduled-state set, 4 queued-state set
-- ARGV: 1 queue name, 2 now, 3 batch size, 4 channel to publish on ('' = none)
-- Returns how many tasks became queued.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
local moved = 0
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  if not redis.call('ZSCORE', KEYS[2], id) then
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    moved = moved + 1
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[1])
end
if moved > 0 then
  redis.call('SADD', KEYS[4], ARGV[1])
  if ARGV[4] ~= '' then
    redis.call('PUBLISH', ARGV[4], ARGV[1])
  end
end
return moved
