-- A user's turn among those with callbacks due: their earliest.
local function callback_turn(p, user)
  local head = redis.call('ZRANGE', p .. 'cb:' .. user, 0, 0, 'WITHSCORES')
  if #head == 0 then
    redis.call('ZREM', p .. 'cbturns', user)
  else
    redis.call('ZADD', p .. 'cbturns', head[2], user)
  end
end
local function followups(p, id, user, status, due, callback_due, finished_at)
  if status == 'queued' and due ~= '' then
    redis.call('ZADD', p .. 'due:' .. user, due, id)
    redis.call('ZADD', p .. 'turns', 'LT', due, user)
  end
  if callback_due ~= '' then
    redis.call('ZADD', p .. 'cb:' .. user, callback_due, id)
  else
    redis.call('ZREM', p .. 'cb:' .. user, id)
  end
  callback_turn(p, user)
  if finished_at ~= '' then
    redis.call('ZADD', p .. 'finished', finished_at, id)
  else
    redis.call('ZREM', p .. 'finished', id)
  end
end
-- Counters never go below zero (jobs stored before they were kept).
local function add(key, field, n)
  if redis.call('HINCRBY', key, field, n) < 0 then
    redis.call('HSET', key, field, 0)
  end
end
local waits = {queued = true, running = true, paused = true}
-- A job moved between statuses: the counts by status, and the user's count of waiting jobs.
local function recount(p, user, from, to)
  redis.call('HINCRBY', p .. 'counts', from, -1)
  redis.call('HINCRBY', p .. 'counts', to, 1)
  if waits[from] and not waits[to] then
    add(p .. 'kept:' .. user, 'waiting', -1)
  elseif waits[to] and not waits[from] then
    add(p .. 'kept:' .. user, 'waiting', 1)
  end
end
local function give_turn(p, user)
  local head = redis.call('ZRANGE', p .. 'due:' .. user, 0, 0, 'WITHSCORES')
  if #head > 0 then
    redis.call('ZADD', p .. 'turns', 'LT', head[2], user)
  end
end
-- The user's turn as it now stands: their earliest due job, or at the cap, when a lease of theirs lapses (a
-- finishing job gives the turn back sooner).
local function retime(p, user, cap)
  local head = redis.call('ZRANGE', p .. 'due:' .. user, 0, 0, 'WITHSCORES')
  if #head == 0 then
    redis.call('ZREM', p .. 'turns', user)
    return
  end
  local inflight = p .. 'inflight:' .. user
  if redis.call('ZCARD', inflight) < cap then
    redis.call('ZADD', p .. 'turns', head[2], user)
  else
    local first = redis.call('ZRANGE', inflight, 0, 0, 'WITHSCORES')
    redis.call('ZADD', p .. 'turns', math.max(tonumber(head[2]), tonumber(first[2])), user)
  end
end
local function retake(p, id, entry, now)
  redis.call('XACK', p .. 'stream', 'workers', entry)
  redis.call('XDEL', p .. 'stream', entry)
  local job = p .. 'job:' .. id
  local user = redis.call('HGET', job, 'user')
  if not user then
    return 0
  end
  redis.call('ZREM', p .. 'inflight:' .. user, id)
  if redis.call('HGET', job, 'entry') ~= entry then
    give_turn(p, user)
    return 0
  end
  redis.call('HDEL', job, 'entry')
  local status = redis.call('HGET', job, 'status')
  if status == 'running' then
    redis.call('HSET', job, 'status', 'queued')
    recount(p, user, 'running', 'queued')
    status = 'queued'
  end
  if status == 'queued' then
    redis.call('ZADD', p .. 'due:' .. user, now, id)
  end
  give_turn(p, user)
  return 1
end
