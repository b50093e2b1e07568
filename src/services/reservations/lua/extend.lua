if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return 1
