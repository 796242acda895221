-- reserve.lua: check every limit of one subject and, only if all pass, charge them all.
--
-- KEYS[1]  rate hash: GCRA theoretical arrival time (us) per rated resource ("r", "t")
-- KEYS[2]  lease sorted set: in-flight reservations, score = lease expiry (us)
-- KEYS[3]  the day hash (fields r, t, s, x) of the window in ARGV[10..11]
-- KEYS[4]  the month hash (fields r, t, s) of the window in ARGV[12..13]
-- KEYS[5]  the hold: while it lives, every reservation of the subject is refused
--
-- ARGV[1]       now in us, or "" to read Redis TIME
-- ARGV[2..4]    requests, tokens, spend (micro-USD) asked
-- ARGV[5]       lease member ("" takes no lease)
-- ARGV[6]       lease duration (us)
-- ARGV[7]       "charge" or "peek" (peek reads and writes nothing)
-- ARGV[8]       "1": keep day and month counters even where no limit reads them
-- ARGV[9]       "1": a missing day or month hash must be seeded by the caller first
-- ARGV[10..11]  start, end (us) of the day window; ARGV[12..13] of the month window
-- ARGV[14]      grace (us): how long a window hash outlives its window, and an expired
--               lease stays in the lease set (no longer counted) for a late settle
-- ARGV[15]      the limits, "code,amount,burst,interval_us;" each (codes: rr rt dr dt ds
--               mr mt ms cc)
--
-- Expiries are set relative to `now`, so a clock given in ARGV[1] ages keys consistently.
--
-- Returns one string of comma-separated integers: status, denied, retry_after_us, now_us,
-- the day's requests, tokens, spend, the month's requests, tokens, spend (after this
-- charge), then used, remaining, reset_after_us for each limit. status 1: granted and
-- charged; 0: denied, nothing charged, denied = 1-based index of the limit with the longest
-- wait, or 0 when the subject is on hold; -1: the day (5th value 1) or month (6th value 1) hash is missing and must be seeded;
-- -2: now is outside the given windows (the client's clock is off): compute them again.

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

local dend, mend = tonumber(ARGV[11]), tonumber(ARGV[13])
if now < tonumber(ARGV[10]) or now >= dend or now < tonumber(ARGV[12]) or now >= mend then
  return '-2,0,0,' .. string.format('%.0f', now)
end
local dkey, mkey = KEYS[3], KEYS[4]
local grace = tonumber(ARGV[14])

local limits = {}
local track = ARGV[8] == '1'
local uses_day, uses_month = track, track
for code, amount, burst, interval in string.gmatch(ARGV[15], '(%a%a),(%d+),(%d+),(%d+);') do
  local period = string.sub(code, 1, 1)
  limits[#limits + 1] = {
    period = period,
    field = string.sub(code, 2, 2),
    amount = tonumber(amount),
    burst = tonumber(burst),
    interval = tonumber(interval),
  }
  if period == 'd' then uses_day = true elseif period == 'm' then uses_month = true end
end

local function fmt(x) return string.format('%.0f', x) end
local function num(x)
  if x < 1e14 and x > -1e14 then return tostring(x) end
  return fmt(x)
end

-- The window counters, read once. Every window hash the script or the seed writes holds
-- r, t and s, so a missing r means a missing hash.
local seed = ARGV[9] == '1'
local win = {d = {0, 0, 0}, m = {0, 0, 0}}
local missing = {d = false, m = false}
for period, key in pairs({d = uses_day and dkey, m = uses_month and mkey}) do
  if key then
    local v = redis.call('HMGET', key, 'r', 't', 's')
    missing[period] = not v[1]
    win[period] = {tonumber(v[1] or '0'), tonumber(v[2] or '0'), tonumber(v[3] or '0')}
  end
end
if seed and (missing.d or missing.m) then
  return '-1,0,0,' .. fmt(now) .. ',' .. (missing.d and 1 or 0) .. ',' .. (missing.m and 1 or 0)
end
local FIELD = {r = 1, t = 2, s = 3}

-- First pass: where each limit stands before and after this ask; nothing is written.
local before, after, resets = {}, {}, {}
local denied, retry = 0, 0
local held = redis.call('PTTL', KEYS[5])
if held > 0 and not peek then retry = held * 1000 end
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
      used = redis.call('ZCOUNT', KEYS[2], '(' .. fmt(now), '+inf')
      cost = member ~= '' and 1 or 0
      reset = 0
    else
      cost = ask[l.field]
      used = win[l.period][FIELD[l.field]]
      reset = (l.period == 'd' and dend or mend) - now
    end
    before[i] = {used, l.amount - used}
    after[i] = {used + cost, l.amount - used - cost}
    resets[i] = {reset, reset}
    if used + cost > l.amount then
      if l.period == 'c' then
        local first = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. fmt(now), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
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
  local charged = status == 1 and not peek
  local out = {status, denied, fmt(math.ceil(retry)), fmt(now)}
  for _, period in ipairs({'d', 'm'}) do
    local v = win[period]
    local used = (period == 'd' and uses_day) or (period == 'm' and uses_month)
    for j, f in ipairs({'r', 't', 's'}) do
      out[#out + 1] = num((charged and used) and v[j] + ask[f] or v[j])
    end
  end
  for i = 1, #limits do
    local s = charged and after[i] or before[i]
    local r = charged and resets[i][2] or resets[i][1]
    out[#out + 1] = num(s[1])
    out[#out + 1] = num(math.max(0, s[2]))
    out[#out + 1] = num(math.max(0, math.ceil(r)))
  end
  return table.concat(out, ',')
end

if retry > 0 then
  if uses_day and not peek then
    redis.call('HINCRBY', dkey, 'x', 1)
    if not seed then redis.call('PEXPIRE', dkey, fmt(math.ceil((dend + grace - now) / 1000))) end
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
  local function charge(key, v, wend)
    redis.call('HSET', key, 'r', num(v[1] + ask.r), 't', num(v[2] + ask.t), 's', num(v[3] + ask.s))
    -- A seeded hash already expires after its window; others get their expiry here.
    if not seed then redis.call('PEXPIRE', key, fmt(math.ceil((wend + grace - now) / 1000))) end
  end
  if uses_day then charge(dkey, win.d, dend) end
  if uses_month then charge(mkey, win.m, mend) end
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
