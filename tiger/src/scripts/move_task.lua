-- Moves tasks out of a state, each into another state of the same queue, or out of Redis
-- when it is finished. Optionally appends a failed-execution record first.
--
-- Each move takes 11 KEYS and 14 ARGV, one move after another; for one move:
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
-- Returns one number per move: 1, or 0 without changing anything when the id is not in
-- the from zset (another worker or an operator moved it first) or its score is outside
-- what ARGV 11-14 accept. A worker finishing many tasks at once sends them in one call.
local function move(K, A)
  local id = A[1]
  local score = redis.call('ZSCORE', K[1], id)
  if not score then
    return 0
  end
  if A[11] ~= '' and tonumber(score) > tonumber(A[11]) then
    return 0
  end
  if A[12] ~= '' then
    local s = tonumber(score)
    local mine = s >= tonumber(A[12]) and s <= tonumber(A[13])
    for sent in string.gmatch(A[14], '[^,]+') do
      mine = mine or s == tonumber(sent)
    end
    if not mine then
      return 0
    end
  end

  if A[7] ~= '' then
    redis.call('RPUSH', K[6], A[7])
    redis.call('INCR', K[7])
    local keep = tonumber(A[8])
    if keep and keep > 0 then
      redis.call('LTRIM', K[6], -keep, -1)
    end
  end

  redis.call('ZREM', K[1], id)

  if A[3] ~= '' then
    if A[5] == '' then
      redis.call('ZADD', K[3], A[4], id)
    else
      redis.call('ZADD', K[3], A[5], A[4], id)
    end
    redis.call('SADD', K[4], A[2])
  elseif A[6] == '1' then
    -- A unique id can sit in several states of its queue at once; keep what they still need:
    -- the records stay while the task is (still) in error, unless it is leaving error now.
    if A[10] == '1' or not redis.call('ZSCORE', K[11], id) then
      redis.call('DEL', K[6], K[7])
    end
    local referenced = false
    for i = 8, 11 do
      if redis.call('ZSCORE', K[i], id) then
        referenced = true
      end
    end
    if not referenced then
      redis.call('DEL', K[5])
    end
  else
    redis.call('DEL', K[5], K[6], K[7])
  end

  if redis.call('EXISTS', K[1]) == 0 then
    redis.call('SREM', K[2], A[2])
  end
  if A[3] == 'queued' and A[9] ~= '' then
    redis.call('PUBLISH', A[9], A[2])
  end
  return 1
end

local results = {}
for m = 0, #KEYS / 11 - 1 do
  local keys = {unpack(KEYS, m * 11 + 1, m * 11 + 11)}
  results[m + 1] = move(keys, {unpack(ARGV, m * 14 + 1, m * 14 + 14)})
end
return results
