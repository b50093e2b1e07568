local p = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', p .. 'finished', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local job = p .. 'job:' .. id
  local found = redis.call('HMGET', job, 'user', 'status', 'idem', 'rlen')
  if not (found[1] and redis.call('ZSCORE', p .. 'cb:' .. found[1], id)) then
    if found[1] then
      redis.call('ZREM', p .. 'user:' .. found[1], id)
      if found[3] and found[3] ~= '' then
        redis.call('DEL', p .. 'idem:' .. found[1] .. ':' .. found[3])
      end
      redis.call('HINCRBY', p .. 'counts', found[2], -1)
      add(p .. 'kept:' .. found[1], 'bytes', -tonumber(found[4] or '0'))
      redis.call('DEL', job)
    end
  end
  redis.call('ZREM', p .. 'finished', id)
end
return #ids
