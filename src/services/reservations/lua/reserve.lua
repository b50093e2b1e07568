local c = committed(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[1]), tonumber(ARGV[2]))
if c > tonumber(ARGV[6]) then
  return {0, string.format('%.0f', c)}
end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4] .. '|' .. ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return {1, string.format('%.0f', c)}
