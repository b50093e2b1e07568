if redis.call('HINCRBY', KEYS[1], ARGV[1], -tonumber(ARGV[2])) == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('HINCRBY', KEYS[2], ARGV[3] .. '|' .. ARGV[4], ARGV[2])
local now, fresh, oldest = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local spans = redis.call('HGETALL', KEYS[2])
for i = 1, #spans, 2 do
  local s, e = string.match(spans[i], '^(%d+)|(%d+)$')
  s, e = tonumber(s), tonumber(e)
  if e < now - oldest then
    redis.call('HDEL', KEYS[2], spans[i])
  elseif e - s == 1000 and e <= now - fresh - 1000 then
    local m = s - (s % 60000)
    redis.call('HDEL', KEYS[2], spans[i])
    redis.call('HINCRBY', KEYS[2], string.format('%.0f|%.0f', m, m + 60000), spans[i + 1])
  end
end
redis.call('PEXPIRE', KEYS[2], oldest + 60000)
return 1
