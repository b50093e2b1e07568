local p, consumer, now = ARGV[1], ARGV[2], ARGV[4]
local claimed = redis.call('XAUTOCLAIM', p .. 'stream', 'workers', consumer, ARGV[3], '0-0', 'COUNT', 100)
local n = 0
for _, entry in ipairs(claimed[2]) do
  if entry[2] then
    n = n + retake(p, entry[2][2], entry[1], now)
  end
end
return n
