local p, id, user, idem = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local idem_key = p .. 'idem:' .. user .. ':' .. idem
if idem ~= '' then
  local existing = redis.call('GET', idem_key)
  if existing then
    local found = redis.call('HMGET', p .. 'job:' .. existing, 'record', 'status', 'secret')
    if found[1] then
      return {0, found[1], found[2], found[3] or ''}
    end
  end
end
local kept = p .. 'kept:' .. user
local counts = redis.call('HMGET', kept, 'waiting', 'bytes')
local len = string.len(ARGV[6])
if tonumber(counts[1] or '0') >= tonumber(ARGV[9]) then
  return {2, 'waiting'}
end
if tonumber(counts[2] or '0') + len > tonumber(ARGV[10]) then
  return {2, 'bytes'}
end
if idem ~= '' then
  redis.call('SET', idem_key, id)
end
redis.call('HINCRBY', kept, 'waiting', 1)
redis.call('HINCRBY', kept, 'bytes', len)
local job = p .. 'job:' .. id
redis.call('HSET', job, 'user', user, 'status', 'queued', 'rev', 0, 'record', ARGV[5], 'request', ARGV[6], 'idem', idem,
  'rlen', len, 'cbhost', ARGV[11])
if ARGV[7] ~= '' then
  redis.call('HSET', job, 'secret', ARGV[7])
end
redis.call('ZADD', p .. 'user:' .. user, ARGV[8], id)
redis.call('HINCRBY', p .. 'counts', 'queued', 1)
followups(p, id, user, 'queued', ARGV[8], '', '')
return {1}
