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
-- Returns integers: status, denied, retry_after_us, now_us, then what the limits were
-- decided on, as they stood before this ask: the day's requests, tokens, spend, the
-- month's requests, tokens, spend, the stored arrival time of rated requests and of rated
-- tokens (0: none), the live leases, and the wait for the first lease to end (0 unless
-- the concurrency limit refused). The caller derives each limit's state from these.
-- status 1: granted and charged; 0: denied, nothing charged, denied = 1-based index of the
-- limit with the longest wait, or 0 when the subject is on hold; -1: the day (5th value 1)
-- or month (6th value 1) hash is missing and must be seeded; -2: now is outside the given
-- windows (the client's clock is off): compute them again.
--
-- Every value stays below 2^53, so Lua's doubles carry them exactly. Redis writes a number
-- given to redis.call with 17 significant digits and truncates one in a reply to an
-- integer; only string concatenation (14 digits) must not see microsecond times.

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local peek = ARGV[7] == 'peek'
local ask_r, ask_t, ask_s = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local member = ARGV[5]
if peek then
  ask_r, ask_t, ask_s, member = 0, 0, 0, ''
end

local dend, mend = tonumber(ARGV[11]), tonumber(ARGV[13])
if now < tonumber(ARGV[10]) or now >= dend or now < tonumber(ARGV[12]) or now >= mend then
  return {-2, 0, 0, now}
end
local dkey, mkey = KEYS[3], KEYS[4]

-- The limits, and which keys they read.
local track = ARGV[8] == '1'
local uses_day, uses_month, rated, leased = track, track, false, false
local codes, amounts, bursts, intervals = {}, {}, {}, {}
local n = 0
for code, amount, burst, interval in string.gmatch(ARGV[15], '(%a%a),(%d+),(%d+),(%d+);') do
  n = n + 1
  codes[n], amounts[n], bursts[n], intervals[n] = code, tonumber(amount), tonumber(burst), tonumber(interval)
  local period = string.byte(code, 1)
  if period == 100 then uses_day = true          -- d
  elseif period == 109 then uses_month = true    -- m
  elseif period == 114 then rated = true         -- r
  else leased = true end                         -- c
end

-- The window counters, read once. Every window hash the script or the seed writes holds
-- r, t and s, so a missing r means a missing hash.
local seed = ARGV[9] == '1'
local d = {0, 0, 0}
local m = {0, 0, 0}
local dmiss, mmiss = false, false
if uses_day then
  local v = redis.call('HMGET', dkey, 'r', 't', 's')
  dmiss = not v[1]
  d = {tonumber(v[1] or '0'), tonumber(v[2] or '0'), tonumber(v[3] or '0')}
end
if uses_month then
  local v = redis.call('HMGET', mkey, 'r', 't', 's')
  mmiss = not v[1]
  m = {tonumber(v[1] or '0'), tonumber(v[2] or '0'), tonumber(v[3] or '0')}
end
if seed and (dmiss or mmiss) then
  return {-1, 0, 0, now, dmiss and 1 or 0, mmiss and 1 or 0}
end
local tat_r, tat_t, leases, lease_wait = 0, 0, 0, 0
if rated then
  local v = redis.call('HMGET', KEYS[1], 'r', 't')
  tat_r, tat_t = tonumber(v[1] or '0'), tonumber(v[2] or '0')
end
if leased then
  leases = redis.call('ZCOUNT', KEYS[2], string.format('(%.0f', now), '+inf')
end

-- Each limit's wait; the longest one refuses. Nothing is written yet.
local denied, retry = 0, 0
local held = redis.call('PTTL', KEYS[5])
if held > 0 and not peek then retry = held * 1000 end
local new_r, new_t = nil, nil
for i = 1, n do
  local code, amount = codes[i], amounts[i]
  local period, field = string.byte(code, 1), string.byte(code, 2)
  local wait = 0
  if period == 114 then  -- r: GCRA
    local cost, tat = ask_r, tat_r
    if field == 116 then cost, tat = ask_t, tat_t end
    local T = intervals[i] / amount
    if tat < now then tat = now end
    -- Rounded down: a stored TAT never runs ahead of the exact one, else with a fractional T
    -- the rounding adds up over a burst and its last slot is refused.
    local new_tat = math.floor(tat + T * cost)
    local allow_at = new_tat - T * bursts[i]
    if allow_at > now then
      wait = allow_at - now
    elseif field == 116 then
      new_t = new_tat
    else
      new_r = new_tat
    end
  elseif period == 99 then  -- c
    if leases + (member ~= '' and 1 or 0) > amount then
      local first = redis.call('ZRANGEBYSCORE', KEYS[2], string.format('(%.0f', now), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
      wait = 1000000
      if first[2] and tonumber(first[2]) - now < wait then wait = tonumber(first[2]) - now end
      lease_wait = wait
    end
  else
    local v = period == 100 and d or m
    local used, cost = v[1], ask_r
    if field == 116 then used, cost = v[2], ask_t elseif field == 115 then used, cost = v[3], ask_s end
    if used + cost > amount then wait = (period == 100 and dend or mend) - now end
  end
  if wait > retry then
    retry = wait
    denied = i
  end
end

local function reply(status)
  return {status, denied, math.ceil(retry), now, d[1], d[2], d[3], m[1], m[2], m[3],
    tat_r, tat_t, leases, lease_wait}
end

local grace = tonumber(ARGV[14])
if retry > 0 then
  if uses_day and not peek then
    redis.call('HINCRBY', dkey, 'x', 1)
    if not seed then redis.call('PEXPIRE', dkey, math.ceil((dend + grace - now) / 1000)) end
  end
  return reply(0)
end
if peek then return reply(1) end

if new_r or new_t then
  local last = math.max(new_r or 0, new_t or 0)
  if new_r and new_t then
    redis.call('HSET', KEYS[1], 'r', new_r, 't', new_t)
  elseif new_r then
    redis.call('HSET', KEYS[1], 'r', new_r)
  else
    redis.call('HSET', KEYS[1], 't', new_t)
  end
  redis.call('PEXPIRE', KEYS[1], math.ceil((last - now) / 1000) + 1)
end
if uses_day then
  redis.call('HSET', dkey, 'r', d[1] + ask_r, 't', d[2] + ask_t, 's', d[3] + ask_s)
  -- A seeded hash already expires after its window; others get their expiry here.
  if not seed then redis.call('PEXPIRE', dkey, math.ceil((dend + grace - now) / 1000)) end
end
if uses_month then
  redis.call('HSET', mkey, 'r', m[1] + ask_r, 't', m[2] + ask_t, 's', m[3] + ask_s)
  if not seed then redis.call('PEXPIRE', mkey, math.ceil((mend + grace - now) / 1000)) end
end
if member ~= '' then
  -- Expired leases no longer count, but are kept for `grace` so a late settle still
  -- finds its reservation and moves the counters by actual - reserved.
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('(%.0f', now - grace))
  local lease_us = tonumber(ARGV[6])
  redis.call('ZADD', KEYS[2], now + lease_us, member)
  redis.call('PEXPIRE', KEYS[2], math.ceil((lease_us + grace) / 1000) + 1)
end
return reply(1)
