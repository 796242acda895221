-- settle.lua: bring a reservation's charges to the amounts really used, release its lease,
-- for every subject it charged (a user, their team, their key) at once.
--
-- Per subject, 2 keys (subject j's are KEYS[2j-1 .. 2j]): its state hash and its lease
-- sorted set (see reserve.lua)
--
-- ARGV[1]       lease member ("" if the reservation took none)
-- ARGV[2..4]    requests, tokens, spend reserved
-- ARGV[5..7]    requests, tokens, spend actually used
-- ARGV[8..9]    the day and the month the reservation was charged in (their starts in us)
-- ARGV[10..]    per subject: n, the number of its rated resources, then 2 values each:
--               field (r, t), emission interval (us)
--
-- Returns 1 if the reservation was still held by the first subject (counters moved by
-- actual - reserved) or 0 if its lease was gone (Redis lost it, or it expired): then the
-- counters that exist are given the actual amounts, since they no longer hold the
-- reservation. Each subject is judged by its own lease. A day or month the state no longer
-- holds (it rolled over, or was lost) is left alone: it is seeded from the ledger.

local unpack = unpack or table.unpack
local reserved = {tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])}
local actual = {tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])}
local RESOURCE = {r = 1, t = 2}

local first_held = 1
local pos = 10
for j = 1, #KEYS / 2 do
  local state, lease = KEYS[2 * j - 1], KEYS[2 * j]
  local held = 1
  if ARGV[1] ~= '' then held = redis.call('ZREM', lease, ARGV[1]) end
  if j == 1 then first_held = held end

  local v = redis.call('HMGET', state, 'dl', 'ml', 'dr', 'dt', 'ds', 'mr', 'mt', 'ms', 'rr', 'rt')
  local fields = {}
  for w, window in ipairs({{v[1] == ARGV[8], 'dr', 'dt', 'ds'}, {v[2] == ARGV[9], 'mr', 'mt', 'ms'}}) do
    if window[1] then
      for i = 1, 3 do
        local delta = actual[i]
        if held == 1 then delta = actual[i] - reserved[i] end
        if delta ~= 0 then
          fields[#fields + 1] = window[i + 1]
          fields[#fields + 1] = tonumber(v[3 * w - 1 + i]) + delta
        end
      end
    end
  end

  local n = tonumber(ARGV[pos])
  if held == 1 then
    for i = 1, n do
      local f = ARGV[pos + 2 * i - 1]
      local T = tonumber(ARGV[pos + 2 * i])
      local tat = v[8 + RESOURCE[f]]
      local delta = actual[RESOURCE[f]] - reserved[RESOURCE[f]]
      if tat and delta ~= 0 then
        fields[#fields + 1] = 'r' .. f
        fields[#fields + 1] = math.floor(tonumber(tat) + delta * T)
      end
    end
  end
  if #fields > 0 then redis.call('HSET', state, unpack(fields)) end
  pos = pos + 1 + 2 * n
end

return first_held
