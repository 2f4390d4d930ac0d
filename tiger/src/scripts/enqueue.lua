-- Writes a new task (or re-writes a unique one) and adds it to a queue's queued or
-- scheduled zset, keeping the score of an id already there (so a unique task keeps its
-- place). Checks `max_queue_size` in the same step, so the check cannot race.
--
-- KEYS: 1 target zset (queued or scheduled), 2 target state set, 3 task,
--       4 queued zset, 5 active zset, 6 scheduled zset, 7 error zset (all of this queue)
-- ARGV: 1 queue name, 2 id, 3 score, 4 task JSON, 5 channel to publish the queue name on
--       ('' = none), 6 max queue size ('' = none), 7 '1' if the task is unique
-- Returns 1 when written; -1 when the queue is full; -2 when a unique task with this id
-- exists but in none of this queue's states (it belongs to another queue). Nothing is
-- written in either refusal.
local id = ARGV[2]
local here = false
if ARGV[7] == '1' then
  for i = 4, 7 do
    if redis.call('ZSCORE', KEYS[i], id) then
      here = true
    end
  end
  if not here and redis.call('EXISTS', KEYS[3]) == 1 then
    return -2
  end
end
-- Only a new entry can overfill the queue: an id already in the target zset adds nothing.
if ARGV[6] ~= '' and not redis.call('ZSCORE', KEYS[1], id) then
  local size = redis.call('ZCARD', KEYS[4]) + redis.call('ZCARD', KEYS[5]) + redis.call('ZCARD', KEYS[6])
  if size >= tonumber(ARGV[6]) then
    return -1
  end
end
redis.call('SET', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[1], 'NX', ARGV[3], id)
redis.call('SADD', KEYS[2], ARGV[1])
if ARGV[5] ~= '' then
  redis.call('PUBLISH', ARGV[5], ARGV[1])
end
return 1
