local function committed(holds, unstored, stored, read_at, now)
  local total = 0
  local entries = redis.call('HGETALL', holds)
  for i = 1, #entries, 2 do
    local amount, expires = string.match(entries[i + 1], '^(%-?%d+)|(%d+)$')
    if tonumber(expires) > now then
      total = total + tonumber(amount)
    else
      redis.call('HDEL', holds, entries[i])
    end
  end
  for _, amount in ipairs(redis.call('HVALS', unstored)) do
    total = total + tonumber(amount)
  end
  local spans = redis.call('HGETALL', stored)
  for i = 1, #spans, 2 do
    if tonumber(string.match(spans[i], '|(%d+)$')) > read_at then
      total = total + tonumber(spans[i + 1])
    end
  end
  return total
end
