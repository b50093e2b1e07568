local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local found = redis.call('HMGET', KEYS[1], 'count', 'last_at')
local count, last = tonumber(found[1] or '0'), tonumber(found[2] or '0')
if count >= tonumber(ARGV[1]) then
  return -1
end
local over = count - tonumber(ARGV[2])
if over >= 0 then
  local wait = math.min(tonumber(ARGV[3]) * 2 ^ over, tonumber(ARGV[4]))
  if now < last + wait then
    return math.ceil(last + wait - now)
  end
end
redis.call('HSET', KEYS[1], 'count', count + 1, 'last_at', now)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 0
