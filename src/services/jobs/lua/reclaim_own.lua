local p, consumer, now = ARGV[1], ARGV[2], ARGV[3]
local n = 0
for _, pending in ipairs(redis.call('XPENDING', p .. 'stream', 'workers', '-', '+', 1000, consumer)) do
  local entry = redis.call('XRANGE', p .. 'stream', pending[1], pending[1])
  if #entry > 0 then
    n = n + retake(p, entry[1][2][2], pending[1], now)
  else
    redis.call('XACK', p .. 'stream', 'workers', pending[1])
  end
end
return n
