-- Gives a scheduled task a new due time and its JSON the matching `scheduled_at`, but only
-- while the JSON is still the text the caller patched (the caller rewrites only that one
-- field's bytes; no JSON is decoded or encoded here).
--
-- KEYS: 1 scheduled zset, 2 task
-- ARGV: 1 id, 2 new due time, 3 '1' if the task has a JSON, 4 the JSON the caller read,
--       5 the patched JSON
-- Returns 1 when done; 0 when the id is not scheduled (nothing changed); -1 when the JSON
-- is no longer the one read (nothing changed: read it again).
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
local current = redis.call('GET', KEYS[2])
if ARGV[3] == '1' then
  if current ~= ARGV[4] then
    return -1
  end
  redis.call('SET', KEYS[2], ARGV[5])
elseif current then
  return -1
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
