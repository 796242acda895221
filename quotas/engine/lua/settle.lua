-- settle.lua: bring a reservation's charges to the amounts really used, release its lease.
--
-- KEYS[1]  rate hash    KEYS[2]  lease sorted set
-- KEYS[3]  the day hash the reservation was charged in    KEYS[4]  its month hash
--
-- ARGV[1]       lease member ("" if the reservation took none)
-- ARGV[2..4]    requests, tokens, spend reserved
-- ARGV[5..7]    requests, tokens, spend actually used
-- ARGV[8]       n, the number of rated resources; then 2 values each: field, emission interval (us)
--
-- Returns 1 if the reservation was still held (counters moved by actual - reserved) or 0 if
-- its lease was gone (Redis lost it, or it expired): then the counters that exist are given
-- the actual amounts, since they no longer hold the reservation.  A missing window hash is
-- left alone: it will be re-seeded from the ledger.

local held = 1
if ARGV[1] ~= '' then held = redis.call('ZREM', KEYS[2], ARGV[1]) end

local reserved = {r = tonumber(ARGV[2]), t = tonumber(ARGV[3]), s = tonumber(ARGV[4])}
local actual = {r = tonumber(ARGV[5]), t = tonumber(ARGV[6]), s = tonumber(ARGV[7])}

local function fmt(x) return string.format('%.0f', x) end

for _, key in ipairs({KEYS[3], KEYS[4]}) do
  if redis.call('EXISTS', key) == 1 then
    for _, f in ipairs({'r', 't', 's'}) do
      local delta = actual[f]
      if held == 1 then delta = actual[f] - reserved[f] end
      if delta ~= 0 then redis.call('HINCRBY', key, f, fmt(delta)) end
    end
  end
end

if held == 1 then
  local n = tonumber(ARGV[8])
  for i = 1, n do
    local f = ARGV[8 + 2 * i - 1]
    local T = tonumber(ARGV[8 + 2 * i])
    local tat = redis.call('HGET', KEYS[1], f)
    local delta = actual[f] - reserved[f]
    if tat and delta ~= 0 then
      redis.call('HSET', KEYS[1], f, fmt(math.floor(tonumber(tat) + delta * T)))
    end
  end
end

return held
