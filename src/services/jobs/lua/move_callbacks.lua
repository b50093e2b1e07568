local p = ARGV[1]
local entries = redis.call('ZRANGE', p .. 'callbacks', 0, 499, 'WITHSCORES')
for i = 1, #entries, 2 do
  local id, due = entries[i], entries[i + 1]
  local user = redis.call('HGET', p .. 'job:' .. id, 'user')
  if user then
    redis.call('ZADD', p .. 'cb:' .. user, due, id)
    callback_turn(p, user)
  end
  redis.call('ZREM', p .. 'callbacks', id)
end
return #entries / 2
