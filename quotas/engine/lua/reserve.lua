-- reserve.lua: check every limit of one or more subjects (a user, their team, the key they
-- call with) and, only if all pass, charge them all.
--
-- Each subject has 5 keys, in this order (subject j's are KEYS[5j-4 .. 5j]); every key of
-- one call shares a hash tag, so on a cluster the call touches one slot:
--   rate hash: GCRA theoretical arrival time (us) per rated resource ("r", "t")
--   lease sorted set: in-flight reservations, score = lease expiry (us)
--   the day hash (fields r, t, s, x) of the window in ARGV[10..11]
--   the month hash (fields r, t, s) of the window in ARGV[12..13]
--   the hold: while it lives, every reservation of the subject is refused
--
-- ARGV[1]       now in us, or "" to read Redis TIME
-- ARGV[2..4]    requests, tokens, spend (micro-USD) asked (of every subject)
-- ARGV[5]       lease member ("" takes no lease)
-- ARGV[6]       lease duration (us)
-- ARGV[7]       "charge" or "peek" (peek reads and writes nothing)
-- ARGV[8]       "1": keep day and month counters even where no limit reads them
-- ARGV[9]       "1": a missing day or month hash must be seeded by the caller first
-- ARGV[10..11]  start, end (us) of the day window; ARGV[12..13] of the month window
-- ARGV[14]      grace (us): how long a window hash outlives its window, and an expired
--               lease stays in the lease set (no longer counted) for a late settle
-- ARGV[15..]    per subject, its limits at fixed positions: n, then 4 values per limit:
--               code (rr rt dr dt ds mr mt ms cc), amount, burst, interval (us)
--
-- Expiries are set relative to `now`, so a clock given in ARGV[1] ages keys consistently. A
-- window hash gets its expiry once, when it is made (here or by seed.lua): it ends at a
-- fixed time, so later writes keep it.
--
-- Returns integers: status, denied, retry_after_us, now_us, then for each subject what its
-- limits were decided on, as they stood before this ask: the day's requests, tokens, spend,
-- the month's requests, tokens, spend, the stored arrival time of rated requests and of
-- rated tokens (0: none), the live leases, and the wait for the first lease to end (0
-- unless the concurrency limit refused). The caller derives each limit's state from these.
-- status 1: granted and charged; 0: denied, nothing charged, denied = 1-based index of the
-- limit with the longest wait, counting every subject's limits in order, or 0 when a
-- subject is on hold; -1: a day or month hash is missing and must be seeded (then two
-- values per subject: day missing, month missing, 1 or 0); -2: now is outside the given
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
local track = ARGV[8] == '1'
local seed = ARGV[9] == '1'
local nsubjects = #KEYS / 5

-- Each subject's limits, which keys they read, and the counters, read once. Every window
-- hash the script or the seed writes holds r, t and s, so a missing r means a missing hash.
local subjects = {}
local missing = false
local pos = 15
for j = 1, nsubjects do
  local k = 5 * (j - 1)
  local n = tonumber(ARGV[pos])
  local s = {rate = KEYS[k + 1], lease = KEYS[k + 2], dkey = KEYS[k + 3], mkey = KEYS[k + 4],
    hold = KEYS[k + 5], uses_day = track, uses_month = track, rated = false, leased = false,
    first = pos + 1, n = n, d = {0, 0, 0}, m = {0, 0, 0}, dmiss = false, mmiss = false,
    tat_r = 0, tat_t = 0, leases = 0, lease_wait = 0}
  for i = pos + 1, pos + 4 * n, 4 do
    local period = string.byte(ARGV[i], 1)
    if period == 100 then s.uses_day = true          -- d
    elseif period == 109 then s.uses_month = true    -- m
    elseif period == 114 then s.rated = true         -- r
    else s.leased = true end                         -- c
  end
  pos = pos + 1 + 4 * n
  if s.uses_day then
    local v = redis.call('HMGET', s.dkey, 'r', 't', 's')
    s.dmiss = not v[1]
    s.d = {tonumber(v[1] or '0'), tonumber(v[2] or '0'), tonumber(v[3] or '0')}
  end
  if s.uses_month then
    local v = redis.call('HMGET', s.mkey, 'r', 't', 's')
    s.mmiss = not v[1]
    s.m = {tonumber(v[1] or '0'), tonumber(v[2] or '0'), tonumber(v[3] or '0')}
  end
  if s.dmiss or s.mmiss then missing = true end
  subjects[j] = s
end
if seed and missing then
  local reply = {-1, 0, 0, now}
  for j = 1, nsubjects do
    reply[#reply + 1] = subjects[j].dmiss and 1 or 0
    reply[#reply + 1] = subjects[j].mmiss and 1 or 0
  end
  return reply
end

-- Each limit's wait; the longest one refuses. Nothing is written yet.
local denied, retry, offset = 0, 0, 0
for j = 1, nsubjects do
  local s = subjects[j]
  if s.rated then
    local v = redis.call('HMGET', s.rate, 'r', 't')
    s.tat_r, s.tat_t = tonumber(v[1] or '0'), tonumber(v[2] or '0')
  end
  if s.leased then
    s.leases = redis.call('ZCOUNT', s.lease, string.format('(%.0f', now), '+inf')
  end
  local held = redis.call('PTTL', s.hold)
  if held > 0 and not peek and held * 1000 > retry then
    retry, denied = held * 1000, 0  -- on hold: no limit is to blame, unless one waits longer
  end
  for i = 1, s.n do
    local at = s.first + 4 * (i - 1)
    local amount = tonumber(ARGV[at + 1])
    local period, field = string.byte(ARGV[at], 1, 2)
    local wait = 0
    if period == 114 then  -- r: GCRA
      local cost, tat = ask_r, s.tat_r
      if field == 116 then cost, tat = ask_t, s.tat_t end
      local T = tonumber(ARGV[at + 3]) / amount
      if tat < now then tat = now end
      -- Rounded down: a stored TAT never runs ahead of the exact one, else with a fractional
      -- T the rounding adds up over a burst and its last slot is refused.
      local new_tat = math.floor(tat + T * cost)
      local allow_at = new_tat - T * tonumber(ARGV[at + 2])
      if allow_at > now then
        wait = allow_at - now
      elseif field == 116 then
        s.new_t = new_tat
      else
        s.new_r = new_tat
      end
    elseif period == 99 then  -- c
      if s.leases + (member ~= '' and 1 or 0) > amount then
        local first = redis.call('ZRANGEBYSCORE', s.lease, string.format('(%.0f', now), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
        wait = 1000000
        if first[2] and tonumber(first[2]) - now < wait then wait = tonumber(first[2]) - now end
        s.lease_wait = wait
      end
    else
      local v = period == 100 and s.d or s.m
      local used, cost = v[1], ask_r
      if field == 116 then used, cost = v[2], ask_t elseif field == 115 then used, cost = v[3], ask_s end
      if used + cost > amount then wait = (period == 100 and dend or mend) - now end
    end
    if wait > retry then
      retry = wait
      denied = offset + i
    end
  end
  offset = offset + s.n
end

local function reply(status)
  local out = {status, denied, math.ceil(retry), now}
  for j = 1, nsubjects do
    local s = subjects[j]
    local d, m = s.d, s.m
    for _, value in ipairs({d[1], d[2], d[3], m[1], m[2], m[3], s.tat_r, s.tat_t, s.leases, s.lease_wait}) do
      out[#out + 1] = value
    end
  end
  return out
end

local grace = tonumber(ARGV[14])
if retry > 0 then
  if not peek then
    for j = 1, nsubjects do
      local s = subjects[j]
      if s.uses_day then
        redis.call('HINCRBY', s.dkey, 'x', 1)
        if s.dmiss then redis.call('PEXPIRE', s.dkey, math.ceil((dend + grace - now) / 1000)) end
      end
    end
  end
  return reply(0)
end
if peek then return reply(1) end

for j = 1, nsubjects do
  local s = subjects[j]
  local new_r, new_t = s.new_r, s.new_t
  if new_r or new_t then
    local last = math.max(new_r or 0, new_t or 0)
    if new_r and new_t then
      redis.call('HSET', s.rate, 'r', new_r, 't', new_t)
    elseif new_r then
      redis.call('HSET', s.rate, 'r', new_r)
    else
      redis.call('HSET', s.rate, 't', new_t)
    end
    redis.call('PEXPIRE', s.rate, math.ceil((last - now) / 1000) + 1)
  end
  local d, m = s.d, s.m
  if s.uses_day then
    redis.call('HSET', s.dkey, 'r', d[1] + ask_r, 't', d[2] + ask_t, 's', d[3] + ask_s)
    -- A hash that was there (seeded, or made here) already expires after its window.
    if s.dmiss then redis.call('PEXPIRE', s.dkey, math.ceil((dend + grace - now) / 1000)) end
  end
  if s.uses_month then
    redis.call('HSET', s.mkey, 'r', m[1] + ask_r, 't', m[2] + ask_t, 's', m[3] + ask_s)
    if s.mmiss then redis.call('PEXPIRE', s.mkey, math.ceil((mend + grace - now) / 1000)) end
  end
  if member ~= '' then
    -- Expired leases no longer count, but are kept for `grace` so a late settle still
    -- finds its reservation and moves the counters by actual - reserved.
    redis.call('ZREMRANGEBYSCORE', s.lease, '-inf', string.format('(%.0f', now - grace))
    local lease_us = tonumber(ARGV[6])
    redis.call('ZADD', s.lease, now + lease_us, member)
    redis.call('PEXPIRE', s.lease, math.ceil((lease_us + grace) / 1000) + 1)
  end
end
return reply(1)
