-- Refreshes the active score (the heartbeat) of the tasks a worker runs, but only where the
-- score is still one this worker wrote (from its dequeue to its latest heartbeat): a task
-- that another worker recovered, or took again, is not touched (no resurrection, no stolen
-- heartbeat).
--
-- KEYS: the active zset of each task, in order
-- ARGV: 1 now, then for each task: its id, the lowest and the highest score this worker wrote
-- Returns one flag per task: 1 refreshed, 0 no longer this worker's.
local now = ARGV[1]
local flags = {}
for i, key in ipairs(KEYS) do
  local id = ARGV[3 * i - 1]
  local score = tonumber(redis.call('ZSCORE', key, id))
    if score and score >= tonumber(ARGV[3 * i]) and score <= tonumber(ARGV[3 * i + 1]) then
    redis.call('ZADD', key, 'XX', now, id)
    flags[i] = 1
  else
    flags[i] = 0
  end
end
return flags
