if ARGV[1] ~= '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
if redis.call('HINCRBY', KEYS[2], ARGV[2], ARGV[3]) == 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
return 1
