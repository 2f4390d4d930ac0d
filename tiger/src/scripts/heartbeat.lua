-- Refreshes the active score (the heartbeat) of the tasks a worker runs, but only where the
-- score is still one this worker wrote (from its dequeue to its latest heartbeat): a task
-- that another worker recovered, or took again, is not touched (no resurrection, no stolen
-- heartbeat). Also renews the worker's places in queue semaphores that still hold them.
--
-- KEYS: the active zset of each task, in order, then the semaphore zset of each place
-- ARGV: 1 now, 2 how many tasks (n), then for each task: its id, the lowest and the highest
--       score this worker knows it wrote, the scores it sent without an answer (joined by
--       commas), and the score to write; then for each place: its holder name and its new
--       expiry
-- Returns one flag per task: 1 refreshed, 0 no longer this worker's.
local now = ARGV[1]
local n = tonumber(ARGV[2])
local flags = {}
for i = 1, n do
  local at = 5 * i - 2
  local id = ARGV[at]
  local score = tonumber(redis.call('ZSCORE', KEYS[i], id))
  local mine = score and score >= tonumber(ARGV[at + 1]) and score <= tonumber(ARGV[at + 2])
  if score then
    for sent in string.gmatch(ARGV[at + 3], '[^,]+') do
      mine = mine or score == tonumber(sent)
    end
  end
  if mine then
    redis.call('ZADD', KEYS[i], 'XX', ARGV[at + 4], id)
    flags[i] = 1
  else
    flags[i] = 0
  end
end
local at = 5 * n + 3
for i = n + 1, #KEYS do
  local expires = tonumber(ARGV[at + 1])
  if redis.call('ZADD', KEYS[i], 'XX', 'CH', expires, ARGV[at]) == 1 then
    local ttl = math.ceil(2 * (expires - tonumber(now)))
    if redis.call('TTL', KEYS[i]) < ttl then
      redis.call('EXPIRE', KEYS[i], ttl)
    end
  end
  at = at + 2
end
return flags
