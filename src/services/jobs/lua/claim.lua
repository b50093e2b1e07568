local p, now, cap, lease, consumer = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local stream = p .. 'stream'
-- A script's writes before an error stay: make sure the group exists before writing anything.
local groups = redis.pcall('XINFO', 'GROUPS', stream)
local grouped = false
if type(groups) == 'table' and not groups.err then
  for _, group in ipairs(groups) do
    if group[2] == 'workers' then
      grouped = true
    end
  end
end
if not grouped then
  return redis.error_reply('NOGROUP the jobs consumer group does not exist yet')
end
for _, user in ipairs(redis.call('ZRANGEBYSCORE', p .. 'turns', '-inf', now, 'LIMIT', 0, 50)) do
  local inflight, due = p .. 'inflight:' .. user, p .. 'due:' .. user
  redis.call('ZREMRANGEBYSCORE', inflight, '-inf', now)
  local head = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
  if #head > 0 and tonumber(head[2]) <= now and redis.call('ZCARD', inflight) < cap then
    local id = head[1]
    redis.call('ZREM', due, id)
    local job = p .. 'job:' .. id
    local found = redis.call('HMGET', job, 'status', 'record', 'request')
    local taken = nil
    if found[1] == 'queued' then
      local entry = redis.call('XADD', stream, '*', 'job', id)
      repeat
        local read = redis.call('XREADGROUP', 'GROUP', 'workers', consumer, 'COUNT', 1, 'STREAMS', stream, '>')
        local got = read and read[1][2][1][1]
        if got and got ~= entry then
          redis.call('XACK', stream, 'workers', got)
          redis.call('XDEL', stream, got)
        end
      until not got or got == entry
      redis.call('HSET', job, 'status', 'running', 'entry', entry)
      recount(p, user, 'queued', 'running')
      redis.call('ZADD', inflight, now + lease, id)
      taken = {id, entry, found[2], found[3]}
    end
    retime(p, user, cap)
    if taken then
      return taken
    end
  else
    retime(p, user, cap)
  end
end
return false
