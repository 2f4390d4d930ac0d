-- Takes up to ARGV[2] tasks off a queue, lowest score first, and makes them active.
-- A unique task that is already active is not run twice at once: the popped copy goes to
-- scheduled at ARGV[4] instead (keeping an earlier due time if it already has one).
--
-- KEYS: 1 queued zset, 2 active zset, 3 scheduled zset,
--       4 queued-state set, 5 active-state set, 6 scheduled-state set
-- ARGV: 1 queue name, 2 how many, 3 now (the first heartbeat), 4 due time for a deferred copy
-- Returns the ids that became active, in queue order.
local popped = redis.call('ZPOPMIN', KEYS[1], ARGV[2])
local started = {}
local deferred = 0
for i = 1, #popped, 2 do
  local id = popped[i]
  if redis.call('ZSCORE', KEYS[2], id) then
    redis.call('ZADD', KEYS[3], 'LT', ARGV[4], id)
    deferred = deferred + 1
  else
    redis.call('ZADD', KEYS[2], ARGV[3], id)
    started[#started + 1] = id
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[4], ARGV[1])
end
if #started > 0 then
  redis.call('SADD', KEYS[5], ARGV[1])
end
if deferred > 0 then
  redis.call('SADD', KEYS[6], ARGV[1])
end
return started
