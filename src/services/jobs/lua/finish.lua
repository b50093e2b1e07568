local p, id, entry = ARGV[1], ARGV[2], ARGV[3]
redis.call('XACK', p .. 'stream', 'workers', entry)
redis.call('XDEL', p .. 'stream', entry)
local job = p .. 'job:' .. id
local found = redis.call('HMGET', job, 'user', 'status', 'entry', 'rev')
-- Gone, or taken over: the job and its slot are another worker's now.
if not found[1] or found[3] ~= entry then
  return 0
end
redis.call('ZREM', p .. 'inflight:' .. found[1], id)
redis.call('HDEL', job, 'entry')
local written = 0
if found[2] == 'running' and found[4] == ARGV[9] then
  redis.call('HSET', job, 'record', ARGV[4], 'status', ARGV[5], 'rev', tonumber(ARGV[9]) + 1)
  recount(p, found[1], 'running', ARGV[5])
  followups(p, id, found[1], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
  written = 1
end
give_turn(p, found[1])
return written
