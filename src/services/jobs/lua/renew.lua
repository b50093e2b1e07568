local p, id, entry = ARGV[1], ARGV[2], ARGV[3]
local job = p .. 'job:' .. id
if redis.call('HGET', job, 'entry') ~= entry then
  return 0
end
redis.call('ZADD', p .. 'inflight:' .. redis.call('HGET', job, 'user'), 'XX', tonumber(ARGV[5]) + tonumber(ARGV[6]), id)
redis.call('XCLAIM', p .. 'stream', 'workers', ARGV[4], 0, entry, 'JUSTID')
return 1
