-- Keep a running stream alive: push its lease and reservation expiry forward.
-- Mirrors MemoryLimiter.heartbeat. KEYS: the lease keys (KEYS[1] is the reservation record).
-- ARGV: now_ms, request_id, lease_ttl_ms, reservation_ttl_ms. Reply: 1 alive, 0 gone.
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local lease_ttl = tonumber(ARGV[3])
local res_ttl = tonumber(ARGV[4])

local r = redis.call('HMGET', KEYS[1], 'held', 'expires', 'charges')
if r[1] ~= '1' or tonumber(r[2]) <= now then return 0 end
local expires = math.max(tonumber(r[2]), now + res_ttl)
redis.call('HSET', KEYS[1], 'expires', expires)
redis.call('PEXPIRE', KEYS[1], expires - now + res_ttl)
local alive = 1
for _, c in ipairs(cjson.decode(r[3])) do
  if c.kind == 'streams' then
    local score = redis.call('ZSCORE', c.key, rid)
    if not score or tonumber(score) <= now then
      alive = 0
    else
      redis.call('ZADD', c.key, now + lease_ttl, rid)
      redis.call('PEXPIRE', c.key, lease_ttl + 1000)
    end
  end
end
return alive
