-- Admit one request: evaluate every limit, and only if all enforced ones pass, charge them all.
-- Mirrors gateway/limits/memory_limiter.py; the key layout is in gateway/limits/README.md.
-- KEYS[1]: the reservation record; KEYS[1 + i]: the state of check i.
-- ARGV: now_ms, request_id, reserve_tokens, lease_ttl_ms, reservation_ttl_ms, checks: a JSON
-- array with one array per check: [name, kind (bucket|streams|budget), amount, period_ms,
-- shadow (0|1), cost, tokens (0|1), window, window_end_ms]. One packed argument rather than nine
-- per check: the client's encoding of each argument was the largest cost of an admission.
-- Reply: {allowed, violated, retry_ms, {name, remaining, ...}, {shadow names}, replayed,
-- reserved, {lease keys}}.
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local reserve = tonumber(ARGV[3])
local lease_ttl = tonumber(ARGV[4])
local res_ttl = tonumber(ARGV[5])
local packed = cjson.decode(ARGV[6])
local n = #packed
local STREAMS_RETRY_MS = 1000

local state = redis.call('HGET', KEYS[1], 'held')
if state then
  -- A replay: never charge twice. Hand back the original lease while it is alive.
  local expires = tonumber(redis.call('HGET', KEYS[1], 'expires'))
  if state == '1' and expires > now then
    local r = redis.call('HMGET', KEYS[1], 'reserved', 'keys')
    return {1, '', 0, {}, {}, 1, tonumber(r[1]), cjson.decode(r[2])}
  end
  return {0, 'request.duplicate_id', 0, {}, {}, 1, 0, {}}
end

-- Replicas stamp requests with their own clocks and requests reach Redis out of order, so a
-- bucket's time never moves backwards: an earlier stamp refills nothing and takes nothing away.
local function bucket_level(key, amount, period)
  local s = redis.call('HMGET', key, 'l', 't')
  if not s[1] then return amount, now end
  local at = math.max(now, tonumber(s[2]))
  local level = tonumber(s[1]) + (at - tonumber(s[2])) * amount / math.max(1, period)
  return math.min(amount, level), at
end

local function budget_used(key, window)
  local s = redis.call('HMGET', key, 'w', 'u')
  if s[1] and tonumber(s[1]) == window then return tonumber(s[2]) end
  return 0
end

local checks, oks, retries, remainings = {}, {}, {}, {}
for i = 1, n do
  local a = packed[i]
  local c = {
    key = KEYS[1 + i], name = a[1], kind = a[2], amount = a[3], period = a[4],
    shadow = a[5] == 1, cost = a[6], tokens = a[7] == 1, window = a[8], window_end = a[9],
  }
  checks[i] = c
  local ok, retry, remaining = false, 0, 0
  if c.kind == 'bucket' then
    local level = bucket_level(c.key, c.amount, c.period)
    if c.cost <= level then
      ok, remaining = true, math.max(0, math.floor(level - c.cost))
    elseif c.cost > c.amount then
      retry = c.period
    else
      retry = math.ceil((c.cost - level) * c.period / c.amount)
    end
  elseif c.kind == 'streams' then
    redis.call('ZREMRANGEBYSCORE', c.key, '-inf', now)
    local count = redis.call('ZCARD', c.key)
    if count + 1 <= c.amount then
      ok, remaining = true, c.amount - count - 1
    else
      retry = STREAMS_RETRY_MS
    end
  else
    local used = budget_used(c.key, c.window)
    if used + c.cost <= c.amount then
      ok, remaining = true, c.amount - used - c.cost
    else
      retry = c.window_end - now
    end
  end
  oks[i], retries[i], remainings[i] = ok, retry, remaining
end

local shadow = {}
for i = 1, n do
  if checks[i].shadow and not oks[i] then shadow[#shadow + 1] = checks[i].name end
end
for i = 1, n do
  if not checks[i].shadow and not oks[i] then
    return {0, checks[i].name, retries[i], {}, shadow, 0, 0, {}}
  end
end

local charges, remaining_reply = {}, {}
for i = 1, n do
  local c = checks[i]
  if oks[i] then
    if c.kind == 'bucket' then
      local level, at = bucket_level(c.key, c.amount, c.period)
      level = level - c.cost
      redis.call('HSET', c.key, 'l', string.format('%.17g', level), 't', at)
      local full_in = math.ceil((c.amount - level) * c.period / math.max(1, c.amount))
      redis.call('PEXPIRE', c.key, full_in + 1000)
    elseif c.kind == 'streams' then
      redis.call('ZADD', c.key, now + lease_ttl, rid)
      redis.call('PEXPIRE', c.key, lease_ttl + 1000)
    else
      redis.call('HSET', c.key, 'w', c.window, 'u', budget_used(c.key, c.window) + c.cost)
      redis.call('PEXPIRE', c.key, c.window_end - now + 1000)
    end
    charges[#charges + 1] = {
      key = c.key, kind = c.kind, amount = c.amount, period = c.period, tokens = c.tokens,
      window = c.window,
    }
  end
  if not c.shadow then
    remaining_reply[#remaining_reply + 1] = c.name
    remaining_reply[#remaining_reply + 1] = remainings[i]
  end
end

-- The record outlives its expiry by one more TTL so that late replays and completions still
-- find it and stay idempotent.
redis.call('HSET', KEYS[1], 'held', '1', 'reserved', reserve, 'expires', now + res_ttl,
  'charges', cjson.encode(charges), 'keys', cjson.encode(KEYS))
redis.call('PEXPIRE', KEYS[1], 2 * res_ttl)
return {1, '', 0, remaining_reply, shadow, 0, reserve, KEYS}
