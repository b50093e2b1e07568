local p, now, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local users, hosts = {}, {}
for user in string.gmatch(ARGV[4], '[^,]+') do
  users[user] = true
end
for host in string.gmatch(ARGV[5], '[^\n]+') do
  hosts[host] = true
end
for _, user in ipairs(redis.call('ZRANGEBYSCORE', p .. 'cbturns', '-inf', now, 'LIMIT', 0, 100)) do
  if not users[user] then
    local queue = p .. 'cb:' .. user
    local head = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
    if #head == 0 or tonumber(head[2]) > now then
      callback_turn(p, user)
    else
      local found = redis.call('HMGET', p .. 'job:' .. head[1], 'record', 'status', 'secret', 'cbhost')
      if not found[1] then
        redis.call('ZREM', queue, head[1])
        callback_turn(p, user)
      elseif not hosts[found[4] or ''] then
        redis.call('ZADD', queue, now + lease, head[1])
        callback_turn(p, user)
        return {found[1], found[2], found[3] or ''}
      end
    end
  end
end
return false
