-- Complete one request: release its lease and refund reserved - used tokens, once.
-- Mirrors MemoryLimiter.complete_now. KEYS: the lease keys returned by admit.lua (KEYS[1] is
-- the reservation record). ARGV: now_ms, request_id, used_tokens, reservation_ttl_ms.
-- Reply: reconciled | already_done | expired.
-- With no reservation record, it leaves a done one behind (a tombstone until the reservation TTL):
-- an admission whose reply was lost may still reach Redis after its release (each on its own
-- connection: a resent segment after a partition, a paused server reading its sockets in any
-- order), and admit.lua refuses a request id it finds done, so that late admission charges nothing
-- and holds no lease.
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local used = tonumber(ARGV[3])
local res_ttl = tonumber(ARGV[4])

local r = redis.call('HMGET', KEYS[1], 'held', 'reserved', 'expires', 'charges')
if not r[1] then
  redis.call('HSET', KEYS[1], 'held', '0', 'used', used)
  redis.call('PEXPIRE', KEYS[1], res_ttl)
  return 'expired'
end
if r[1] == '0' then return 'already_done' end
local charges = cjson.decode(r[4])
local result = 'reconciled'
if tonumber(r[3]) <= now then
  -- Expired before completion: the whole reservation stays charged; only the lease goes.
  result = 'expired'
end
local refund = tonumber(r[2]) - used
for _, c in ipairs(charges) do
  if c.kind == 'streams' then
    redis.call('ZREM', c.key, rid)
  elseif result == 'reconciled' and c.tokens then
    if c.kind == 'bucket' then
      local s = redis.call('HMGET', c.key, 'l', 't')
      if s[1] then
        local at = math.max(now, tonumber(s[2]))  -- a bucket's time never moves backwards
        local level = tonumber(s[1]) + (at - tonumber(s[2])) * c.amount / math.max(1, c.period)
        level = math.min(c.amount, math.min(c.amount, level) + refund)
        redis.call('HSET', c.key, 'l', string.format('%.17g', level), 't', at)
        local full_in = math.ceil((c.amount - level) * c.period / math.max(1, c.amount))
        redis.call('PEXPIRE', c.key, full_in + 1000)
      end
    else
      local s = redis.call('HMGET', c.key, 'w', 'u')
      if s[1] and tonumber(s[1]) == c.window then
        redis.call('HSET', c.key, 'u', math.max(0, tonumber(s[2]) - refund))
      end
    end
  end
end
redis.call('HSET', KEYS[1], 'held', '0', 'used', used)
redis.call('PEXPIRE', KEYS[1], res_ttl)
return result
