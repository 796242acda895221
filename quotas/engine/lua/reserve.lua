-- reserve.lua: check every limit of one subject and, only if all pass, charge them all.
--
-- KEYS[1]     rate hash: GCRA theoretical arrival time (us) per rated resource ("r", "t")
-- KEYS[2]     lease sorted set: in-flight reservations, score = lease expiry (us)
-- KEYS[3..5]  day hashes (fields r, t, s, x) for the previous, current and next day
-- KEYS[6..8]  month hashes (fields r, t, s) for the previous, current and next month
--
-- ARGV[1]       now in us, or "" to read Redis TIME
-- ARGV[2..4]    requests, tokens, spend (micro-USD) asked
-- ARGV[5]       lease member ("" takes no lease)
-- ARGV[6]       lease duration (us)
-- ARGV[7]       "charge" or "peek" (peek reads and writes nothing)
-- ARGV[8]       "1": keep day and month counters even where no limit reads them
-- ARGV[9]       "1": a missing day or month hash must be seeded by the caller first
-- ARGV[10..15]  start, end (us) of the three day windows of KEYS[3..5]
-- ARGV[16..21]  start, end (us) of the three month windows of KEYS[6..8]
-- ARGV[22]      grace (us): how long a window hash outlives its window, and an expired
--               lease stays in the lease set (no longer counted) for a late settle
--
-- Expiries are set relative to `now`, so a clock given in ARGV[1] ages keys consistently.
-- ARGV[23]      n, the number of limits; then 4 values each: code, amount, burst, interval (us)
--
-- Returns {status, denied, retry_after_us, now_us, day, month, the day's requests, tokens,
-- spend, the month's requests, tokens, spend (after this charge), then used, remaining,
-- reset_after_us for each limit}.  status 1: granted and charged; 0: denied, nothing
-- charged, denied = 1-based index of the limit with the longest wait; -1: a window hash is
-- missing and must be seeded; day / month (1..3) name the windows in use, negated when missing.

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local peek = ARGV[7] == 'peek'
local ask = {r = tonumber(ARGV[2]), t = tonumber(ARGV[3]), s = tonumber(ARGV[4])}
local member = ARGV[5]
if peek then
  ask = {r = 0, t = 0, s = 0}
  member = ''
end

local function pick(first_key, first_arg)
  for i = 0, 2 do
    local s = tonumber(ARGV[first_arg + 2 * i])
    local e = tonumber(ARGV[first_arg + 2 * i + 1])
    if now >= s and now < e then
      return i + 1, e
    end
  end
  return nil, nil
end

local d, dend = pick(3, 10)
local m, mend = pick(6, 16)
if not d or not m then
  return redis.error_reply('QUOTAS clock: Redis time is more than a day off the app server clock')
end
local dkey, mkey = KEYS[2 + d], KEYS[5 + m]
local grace = tonumber(ARGV[22])

local n = tonumber(ARGV[23])
local limits = {}
local track = ARGV[8] == '1'
local uses_day, uses_month = track, track
for i = 1, n do
  local b = 23 + (i - 1) * 4
  local code = ARGV[b + 1]
  local period = string.sub(code, 1, 1)
  limits[i] = {
    period = period,
    field = string.sub(code, 2, 2),
    amount = tonumber(ARGV[b + 2]),
    burst = tonumber(ARGV[b + 3]),
    interval = tonumber(ARGV[b + 4]),
  }
  if period == 'd' then uses_day = true elseif period == 'm' then uses_month = true end
end

if ARGV[9] == '1' then
  local miss_d = uses_day and redis.call('EXISTS', dkey) == 0
  local miss_m = uses_month and redis.call('EXISTS', mkey) == 0
  if miss_d or miss_m then
    return {-1, 0, 0, now, miss_d and -d or d, miss_m and -m or m}
  end
end

-- First pass: where each limit stands before and after this ask; nothing is written.
local before, after, resets = {}, {}, {}
local denied, retry = 0, 0
local new_tats = {}
for i, l in ipairs(limits) do
  local wait = 0
  if l.period == 'r' then
    local cost = ask[l.field]
    local T = l.interval / l.amount
    local tat = tonumber(redis.call('HGET', KEYS[1], l.field) or '0')
    if tat < now then tat = now end
    -- Rounded down: a stored TAT never runs ahead of the exact one, else with a fractional T
    -- the rounding adds up over a burst and its last slot is refused.
    local new_tat = math.floor(tat + T * cost)
    local allow_at = new_tat - T * l.burst
    local avail = math.min(l.burst, math.floor((now - (tat - T * l.burst)) / T))
    before[i] = {l.burst - avail, avail}
    after[i] = {l.burst - avail + cost, math.floor((now - allow_at) / T)}
    resets[i] = {tat - now, new_tat - now}
    if allow_at > now then wait = allow_at - now else new_tats[l.field] = new_tat end
  else
    local used, cost, reset
    if l.period == 'c' then
      used = redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf')
      cost = member ~= '' and 1 or 0
      reset = 0
    else
      cost = ask[l.field]
      used = tonumber(redis.call('HGET', l.period == 'd' and dkey or mkey, l.field) or '0')
      reset = (l.period == 'd' and dend or mend) - now
    end
    before[i] = {used, l.amount - used}
    after[i] = {used + cost, l.amount - used - cost}
    resets[i] = {reset, reset}
    if used + cost > l.amount then
      if l.period == 'c' then
        local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
        wait = 1000000
        if first[2] and tonumber(first[2]) - now < wait then wait = tonumber(first[2]) - now end
        resets[i] = {wait, wait}
      else
        wait = reset
      end
    end
  end
  if wait > retry then
    retry = wait
    denied = i
  end
end

local function states(status)
  local pick_after = status == 1 and not peek
  local head = {status, denied, math.ceil(retry), now, d, m}
  for _, key in ipairs({dkey, mkey}) do
    local v = redis.call('HMGET', key, 'r', 't', 's')
    for j = 1, 3 do head[#head + 1] = tonumber(v[j] or '0') end
  end
  for i = 1, #limits do
    local s = pick_after and after[i] or before[i]
    local r = pick_after and resets[i][2] or resets[i][1]
    head[#head + 1] = s[1]
    head[#head + 1] = math.max(0, s[2])
    head[#head + 1] = math.max(0, math.ceil(r))
  end
  return head
end

local function fmt(x) return string.format('%.0f', x) end

if denied > 0 then
  if uses_day and not peek then
    redis.call('HINCRBY', dkey, 'x', 1)
    redis.call('PEXPIRE', dkey, fmt(math.ceil((dend + grace - now) / 1000)))
  end
  return states(0)
end

if not peek then
  local last = 0
  for f, tat in pairs(new_tats) do
    redis.call('HSET', KEYS[1], f, fmt(tat))
    if tat > last then last = tat end
  end
  if last > 0 then redis.call('PEXPIRE', KEYS[1], fmt(math.ceil((last - now) / 1000) + 1)) end
  local function charge(key, wend, used)
    if not used then return end
    for _, f in ipairs({'r', 't', 's'}) do
      if ask[f] ~= 0 then redis.call('HINCRBY', key, f, fmt(ask[f])) end
    end
    redis.call('PEXPIRE', key, fmt(math.ceil((wend + grace - now) / 1000)))
  end
  charge(dkey, dend, uses_day)
  charge(mkey, mend, uses_month)
  if member ~= '' then
    -- Expired leases no longer count, but are kept for `grace` so a late settle still
    -- finds its reservation and moves the counters by actual - reserved.
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. fmt(now - grace))
    local expiry = now + tonumber(ARGV[6])
    redis.call('ZADD', KEYS[2], fmt(expiry), member)
    redis.call('PEXPIRE', KEYS[2], fmt(math.ceil((tonumber(ARGV[6]) + grace) / 1000) + 1))
  end
end

return states(1)
