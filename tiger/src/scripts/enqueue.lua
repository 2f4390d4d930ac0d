-- Writes new tasks (or re-writes unique ones) and adds each to its queue's queued or
-- scheduled zset, keeping the score of an id already there (so a unique task keeps its
-- place). Checks `max_queue_size` in the same step, so the check cannot race.
--
-- Each task takes 7 KEYS and 7 ARGV, one task after another; for one task:
-- KEYS: 1 target zset (queued or scheduled), 2 target state set, 3 task,
--       4 queued zset, 5 active zset, 6 scheduled zset, 7 error zset (all of this queue)
-- ARGV: 1 queue name, 2 id, 3 score, 4 task JSON, 5 channel to publish the queue name on
--       ('' = none), 6 max queue size ('' = none), 7 '1' if the task is unique
-- Returns one number per task: 1 when written; -1 when the queue is full; -2 when a unique
-- task with this id exists but in none of this queue's states (it belongs to another
-- queue). Nothing of a refused task is written. Each queue is added to its state set with
-- its first task of the call, and announced on its channel once, after the last.
-- The task whose KEYS start after `k` and ARGV after `a`.
local function enqueue(k, a, announce)
  local id = ARGV[a + 2]
  local task = KEYS[k + 3]
  if ARGV[a + 7] == '1' then
    local here = false
    for i = 4, 7 do
      if redis.call('ZSCORE', KEYS[k + i], id) then
        here = true
      end
    end
    if not here and redis.call('EXISTS', task) == 1 then
      return -2
    end
  end
  -- Only a new entry can overfill the queue: an id already in the target zset adds nothing.
  local max = ARGV[a + 6]
  if max ~= '' and not redis.call('ZSCORE', KEYS[k + 1], id) then
    local size = redis.call('ZCARD', KEYS[k + 4]) + redis.call('ZCARD', KEYS[k + 5])
      + redis.call('ZCARD', KEYS[k + 6])
    if size >= tonumber(max) then
      return -1
    end
  end
  redis.call('SET', task, ARGV[a + 4])
  redis.call('ZADD', KEYS[k + 1], 'NX', ARGV[a + 3], id)
  -- The state set at once (a later task's error must not leave this one unlisted), the
  -- announcement after the loop; each once per call.
  local set, queue, channel = KEYS[k + 2], ARGV[a + 1], ARGV[a + 5]
  local mark = set .. '\n' .. queue
  if not announce[mark] then
    redis.call('SADD', set, queue)
    announce[mark] = true
    if channel ~= '' then
      announce[#announce + 1] = {channel, queue}
    end
  end
  return 1
end

local results = {}
local announce = {}
for t = 0, #KEYS / 7 - 1 do
  results[t + 1] = enqueue(t * 7, t * 7, announce)
end
for _, a in ipairs(announce) do
  redis.call('PUBLISH', a[1], a[2])
end
return results
