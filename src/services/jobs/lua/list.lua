local p, user, status, limit, after = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local index = p .. 'user:' .. user
local start = 0
if after ~= '' then
  local rank = redis.call('ZREVRANK', index, after)
  if not rank then
    return {''}
  end
  start = rank + 1
end
local ids = redis.call('ZREVRANGE', index, start, start + tonumber(ARGV[6]) - 1)
local out = {''}
local taken, last = 0, ''
for _, id in ipairs(ids) do
  local found = redis.call('HMGET', p .. 'job:' .. id, 'record', 'status')
  if found[1] and (status == '' or found[2] == status) then
    if taken == limit then
      out[1] = last
      return out
    end
    table.insert(out, found[1])
    table.insert(out, found[2])
    taken = taken + 1
  end
  last = id
end
if #ids == tonumber(ARGV[6]) then
  out[1] = last
end
return out
