-- Moves one task out of a state: into another state of the same queue, or out of Redis
-- when it is finished. Optionally appends a failed-execution record first.
--
-- KEYS: 1 from zset, 2 from-state set, 3 to zset, 4 to-state set,
--       5 task, 6 executions, 7 executions count,
--       8 queued zset, 9 active zset, 10 scheduled zset, 11 error zset (all of this queue)
-- ARGV: 1 id, 2 queue name, 3 to-state name ('' = finished: remove),
--       4 score in the to zset, 5 ZADD flag ('' = plain, 'LT'),
--       6 '1' if the task is unique, 7 execution record JSON ('' = none),
--       8 how many records to keep ('' or '0' = all), 9 channel to publish the queue
--       name on when the task becomes queued ('' = none), 10 '1' if moving out of error,
--       11 the highest from-score to accept ('' = any): recovery of a lost task passes its
--       cutoff, so a task whose heartbeat came back meanwhile is left alone,
--       12 and 13 the lowest and highest from-score to accept ('' = any), 14 more scores to
--       accept, joined by commas: the worker that ran the task passes the range of
--       heartbeats it knows it wrote and those it sent without an answer, so once another
--       worker holds the task (with other scores), a late result changes nothing
-- Returns 1, or 0 without changing anything when the id is not in the from zset (another
-- worker or an operator moved it first) or its score is above ARGV[11].
local id = ARGV[1]
local score = redis.call('ZSCORE', KEYS[1], id)
if not score then
  return 0
end
if ARGV[11] ~= '' and tonumber(score) > tonumber(ARGV[11]) then
  return 0
end
if ARGV[12] ~= '' then
  local s = tonumber(score)
  local mine = s >= tonumber(ARGV[12]) and s <= tonumber(ARGV[13])
  for sent in string.gmatch(ARGV[14], '[^,]+') do
    mine = mine or s == tonumber(sent)
  end
  if not mine then
    return 0
  end
end

if ARGV[7] ~= '' then
  redis.call('RPUSH', KEYS[6], ARGV[7])
  redis.call('INCR', KEYS[7])
  local keep = tonumber(ARGV[8])
  if keep and keep > 0 then
    redis.call('LTRIM', KEYS[6], -keep, -1)
  end
end

redis.call('ZREM', KEYS[1], id)

if ARGV[3] ~= '' then
  if ARGV[5] == '' then
    redis.call('ZADD', KEYS[3], ARGV[4], id)
  else
    redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4], id)
  end
  redis.call('SADD', KEYS[4], ARGV[2])
elseif ARGV[6] == '1' then
  -- A unique id can sit in several states of its queue at once; keep what they still need.
  if ARGV[10] ~= '1' and not redis.call('ZSCORE', KEYS[11], id) then
    redis.call('DEL', KEYS[6], KEYS[7])
  end
  local referenced = false
  for i = 8, 11 do
    if redis.call('ZSCORE', KEYS[i], id) then
      referenced = true
    end
  end
  if not referenced then
    redis.call('DEL', KEYS[5])
  end
else
  redis.call('DEL', KEYS[5], KEYS[6], KEYS[7])
end

if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[2])
end
if ARGV[3] == 'queued' and ARGV[9] ~= '' then
  redis.call('PUBLISH', ARGV[9], ARGV[2])
end
return 1
