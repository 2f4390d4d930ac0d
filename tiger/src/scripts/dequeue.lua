-- Takes up to ARGV[2] tasks off a queue, lowest score first, and makes them active.
-- A unique task that is already active is not run twice at once: the popped copy goes to
-- scheduled at ARGV[4] instead (keeping an earlier due time if it already has one).
--
-- The queue's semaphore (KEYS[7], TaskTiger's `qslock`: a zset of holders scored by when
-- they expire) gates the take. While its SYSTEM_LOCK member is in the future the queue is
-- paused and nothing is taken. With a size (ARGV[5]), expired holders are dropped first and
-- only as many groups start as there are free places; each group that starts holds the
-- place named ARGV[7] .. its first id, until ARGV[6] (renewed by heartbeats). ARGV[8] = '1'
-- means everything taken is one group (a batch), else each task is its own group.
--
-- KEYS: 1 queued zset, 2 active zset, 3 scheduled zset,
--       4 queued-state set, 5 active-state set, 6 scheduled-state set, 7 semaphore zset
-- ARGV: 1 queue name, 2 how many, 3 now (the first heartbeat), 4 due time for a deferred
--       copy, 5 semaphore size ('' = none), 6 when a new holder expires,
--       7 this worker's holder prefix, 8 '1' for one group
-- Returns {ids that became active, in queue order; 1 if paused or full, else 0}.
local now = tonumber(ARGV[3])
local limit = tonumber(ARGV[2])
local until_ = redis.call('ZSCORE', KEYS[7], 'SYSTEM_LOCK')
if until_ and tonumber(until_) > now then
  return {{}, 1}
end
local size = tonumber(ARGV[5])
local one_group = ARGV[8] == '1'
if size then
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now)
  local free = size - redis.call('ZCARD', KEYS[7])
  if free <= 0 then
    return {{}, 1}
  end
  if not one_group and free < limit then
    limit = free
  end
end

local popped = redis.call('ZPOPMIN', KEYS[1], limit)
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
    if size and (not one_group or #started == 1) then
      redis.call('ZADD', KEYS[7], ARGV[6], ARGV[7] .. id)
    end
  end
end
if size and #started > 0 then
  -- Never shorten it: a pause may need the key longer.
  local ttl = math.ceil(2 * (tonumber(ARGV[6]) - now))
  if redis.call('TTL', KEYS[7]) < ttl then
    redis.call('EXPIRE', KEYS[7], ttl)
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
return {started, 0}
