local p, id = ARGV[1], ARGV[2]
local job = p .. 'job:' .. id
local found = redis.call('HMGET', job, 'user', 'status', 'rev')
if not found[1] or found[2] ~= ARGV[3] or found[3] ~= ARGV[9] then
  return 0
end
redis.call('HSET', job, 'record', ARGV[4], 'status', ARGV[5], 'rev', tonumber(ARGV[9]) + 1)
if found[2] ~= ARGV[5] then
  recount(p, found[1], found[2], ARGV[5])
end
if found[2] == 'queued' then
  redis.call('ZREM', p .. 'due:' .. found[1], id)
end
followups(p, id, found[1], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
return 1
