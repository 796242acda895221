-- settle.lua: bring a reservation's charges to the amounts really used, release its lease,
-- for every subject it charged (a user, their team, their key) at once.
--
-- Per subject, 4 keys (subject j's are KEYS[4j-3 .. 4j]):
--   rate hash, lease sorted set, the day hash and the month hash the reservation was
--   charged in
--
-- ARGV[1]       lease member ("" if the reservation took none)
-- ARGV[2..4]    requests, tokens, spend reserved
-- ARGV[5..7]    requests, tokens, spend actually used
-- ARGV[8..]     per subject: n, the number of its rated resources, then 2 values each:
--               field, emission interval (us)
--
-- Returns 1 if the reservation was still held by the first subject (counters moved by
-- actual - reserved) or 0 if its lease was gone (Redis lost it, or it expired): then the
-- counters that exist are given the actual amounts, since they no longer hold the
-- reservation. Each subject is judged by its own lease. A missing window hash is left
-- alone: it will be re-seeded from the ledger.

local reserved = {r = tonumber(ARGV[2]), t = tonumber(ARGV[3]), s = tonumber(ARGV[4])}
local actual = {r = tonumber(ARGV[5]), t = tonumber(ARGV[6]), s = tonumber(ARGV[7])}

local function fmt(x) return string.format('%.0f', x) end

local first_held = 1
local pos = 8
for j = 1, #KEYS / 4 do
  local k = 4 * (j - 1)
  local held = 1
  if ARGV[1] ~= '' then held = redis.call('ZREM', KEYS[k + 2], ARGV[1]) end
  if j == 1 then first_held = held end

  for _, key in ipairs({KEYS[k + 3], KEYS[k + 4]}) do
    if redis.call('EXISTS', key) == 1 then
      for _, f in ipairs({'r', 't', 's'}) do
        local delta = actual[f]
        if held == 1 then delta = actual[f] - reserved[f] end
        if delta ~= 0 then redis.call('HINCRBY', key, f, fmt(delta)) end
      end
    end
  end

  local n = tonumber(ARGV[pos])
  if held == 1 then
    for i = 1, n do
      local f = ARGV[pos + 2 * i - 1]
      local T = tonumber(ARGV[pos + 2 * i])
      local tat = redis.call('HGET', KEYS[k + 1], f)
      local delta = actual[f] - reserved[f]
      if tat and delta ~= 0 then
        redis.call('HSET', KEYS[k + 1], f, fmt(math.floor(tonumber(tat) + delta * T)))
      end
    end
  end
  pos = pos + 1 + 2 * n
end

return first_held
