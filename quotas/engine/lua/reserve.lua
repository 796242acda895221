-- reserve.lua: check every limit of one or more subjects (a user, their team, the key they
-- call with) and, only if all pass, charge them all.
--
-- Each subject has 2 keys, in this order (subject j's are KEYS[2j-1 .. 2j]); every key of
-- one call shares a hash tag, so on a cluster the call touches one slot:
--   state hash: everything a decision reads and writes, read once and written once:
--     rr, rt          GCRA theoretical arrival time (us) of rated requests and tokens
--     dl              the day the day counters are of (its start in us, as ARGV[10])
--     dr, dt, ds, dx  that day's requests, tokens, spend (micro-USD) and denials
--     ml              the month the month counters are of (its start in us, as ARGV[12])
--     mr, mt, ms      that month's requests, tokens, spend
--     h               until when (us, Redis's clock) every reservation is refused (hold.lua)
--   lease sorted set: in-flight reservations, score = lease expiry (us)
--
-- ARGV[1]       now in us, or "" to read Redis TIME
-- ARGV[2..4]    requests, tokens, spend (micro-USD) asked (of every subject)
-- ARGV[5]       lease member ("" takes no lease)
-- ARGV[6]       lease duration (us)
-- ARGV[7]       "charge" or "peek" (peek reads and writes nothing)
-- ARGV[8]       "1": keep day and month counters even where no limit reads them
-- ARGV[9]       "1": a day or month missing from the state must be seeded by the caller
-- ARGV[10..11]  start, end (us) of the day window; ARGV[12..13] of the month window
-- ARGV[14]      grace (us): how long counters outlive their window, and an expired
--               lease stays in the lease set (no longer counted) for a late settle
-- ARGV[15..]    per subject, its limits at fixed positions: n, then 4 values per limit:
--               code (rr rt dr dt ds mr mt ms cc), amount, burst, interval (us)
--
-- A day (or month) whose label in the state is not the current one is missing: its
-- counters start at zero, or are seeded from the ledger first (ARGV[9]). The state hash
-- lives as long as what it holds needs: the month's end plus the grace once it holds a
-- month, else the day's, else the latest arrival time. Its expiry is set only when a
-- write needs it longer than the labels it had show, so a subject whose day and month are
-- current costs no PEXPIRE. (A subject's policies are meant to share one time zone: the
-- day and month of another replace its counters.) Expiries are relative to `now`, so a clock given in ARGV[1]
-- ages keys consistently.
--
-- Returns integers: status, denied, retry_after_us, now_us, then for each subject what its
-- limits were decided on, as they stood before this ask: the day's requests, tokens, spend,
-- the month's requests, tokens, spend, the stored arrival time of rated requests and of
-- rated tokens (0: none), the live leases, and the wait for the first lease to end (0
-- unless the concurrency limit refused). The caller derives each limit's state from these.
-- status 1: granted and charged; 0: denied, nothing charged, denied = 1-based index of the
-- limit with the longest wait, counting every subject's limits in order, or 0 when a
-- subject is on hold; -1: a day or month is missing and must be seeded (then two values
-- per subject: day missing, month missing, 1 or 0); -2: now is outside the given windows
-- (the client's clock is off): compute them again.
--
-- Every value stays below 2^53, so Lua's doubles carry them exactly. Redis writes a number
-- given to redis.call with 17 significant digits and truncates one in a reply to an
-- integer; only string concatenation (14 digits) must not see microsecond times.

local unpack = unpack or table.unpack
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

local dlabel, mlabel = ARGV[10], ARGV[12]
local dend, mend = tonumber(ARGV[11]), tonumber(ARGV[13])
if now < tonumber(dlabel) or now >= dend or now < tonumber(mlabel) or now >= mend then
  return {-2, 0, 0, now}
end
local track = ARGV[8] == '1'
local seed = ARGV[9] == '1'
local grace = tonumber(ARGV[14])
local nsubjects = #KEYS / 2

-- Each subject's limits, which parts of its state they read, and the state, read once.
local subjects = {}
local missing = false
local pos = 15
for j = 1, nsubjects do
  local k = 2 * (j - 1)
  local n = tonumber(ARGV[pos])
  local uses_day, uses_month, leased = track, track, false
  for i = pos + 1, pos + 4 * n, 4 do
    local period = string.byte(ARGV[i], 1)
    if period == 100 then uses_day = true          -- d
    elseif period == 109 then uses_month = true    -- m
    elseif period == 99 then leased = true end     -- c
  end
  local v = redis.call('HMGET', KEYS[k + 1], 'rr', 'rt', 'dl', 'dr', 'dt', 'ds', 'ml', 'mr', 'mt', 'ms', 'h')
  local day_current, month_current = v[3] == dlabel, v[7] == mlabel
  -- The counters: the day's requests, tokens, spend, then the month's.
  local c = {0, 0, 0, 0, 0, 0}
  if day_current then c[1], c[2], c[3] = tonumber(v[4]), tonumber(v[5]), tonumber(v[6]) end
  if month_current then c[4], c[5], c[6] = tonumber(v[8]), tonumber(v[9]), tonumber(v[10]) end
  local s = {state = KEYS[k + 1], lease = KEYS[k + 2], uses_day = uses_day,
    uses_month = uses_month, leased = leased, first = pos + 1, n = n, c = c,
    tat_r = tonumber(v[1] or '0'), tat_t = tonumber(v[2] or '0'), leases = 0, lease_wait = 0,
    day_current = day_current, month_current = month_current,
    held = tonumber(v[11] or '0') - now,
    fresh = not (v[1] or v[2] or v[3] or v[7] or v[11]),  -- every state written has one
    dmiss = uses_day and not day_current, mmiss = uses_month and not month_current,
    new_r = false, new_t = false}
  if s.dmiss or s.mmiss then missing = true end
  subjects[j] = s
  pos = pos + 1 + 4 * n
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
  if s.leased then
    s.leases = redis.call('ZCOUNT', s.lease, string.format('(%.0f', now), '+inf')
  end
  if s.held > 0 and not peek and s.held > retry then
    retry, denied = s.held, 0  -- on hold: no limit is to blame, unless one waits longer
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
      local base = period == 100 and 0 or 3
      local used, cost = s.c[base + 1], ask_r
      if field == 116 then used, cost = s.c[base + 2], ask_t elseif field == 115 then used, cost = s.c[base + 3], ask_s end
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
    local s, at = subjects[j], 10 * j - 6
    local c = s.c
    out[at + 1], out[at + 2], out[at + 3], out[at + 4], out[at + 5] = c[1], c[2], c[3], c[4], c[5]
    out[at + 6], out[at + 7], out[at + 8], out[at + 9], out[at + 10] = c[6], s.tat_r, s.tat_t, s.leases, s.lease_wait
  end
  return out
end

-- Write `fields` to the subject's state, and make it live until `until_us` if the labels
-- it had do not already show that it does. An expiry is only ever lengthened (GT), except
-- on a state just made: it may hold a window of another time zone, whose life the labels
-- compared here do not show.
local function write(s, fields, until_us)
  redis.call('HSET', s.state, unpack(fields))
  local lives = 0
  if s.month_current then lives = mend + grace elseif s.day_current then lives = dend + grace end
  if until_us > lives then
    local ms = math.ceil((until_us - now) / 1000) + 1
    if s.fresh then
      redis.call('PEXPIRE', s.state, ms)
    else
      redis.call('PEXPIRE', s.state, ms, 'GT')
    end
  end
end

if retry > 0 then
  if not peek then
    for j = 1, nsubjects do
      local s = subjects[j]
      if s.uses_day then
        if s.day_current then
          redis.call('HINCRBY', s.state, 'dx', 1)
        else
          write(s, {'dl', dlabel, 'dr', 0, 'dt', 0, 'ds', 0, 'dx', 1}, dend + grace)
        end
      end
    end
  end
  return reply(0)
end
if peek then return reply(1) end

for j = 1, nsubjects do
  local s = subjects[j]
  local fields, n, until_us = {}, 0, 0
  if s.new_r then
    fields[1], fields[2], n = 'rr', s.new_r, 2
  end
  if s.new_t then
    fields[n + 1], fields[n + 2], n = 'rt', s.new_t, n + 2
  end
  if s.new_r or s.new_t then
    until_us = math.max(s.new_r or 0, s.new_t or 0, s.tat_r, s.tat_t)
  end
  -- A window's counters are written when they change, and all of them when it starts.
  local c = s.c
  if s.uses_day then
    local new = not s.day_current
    if new then
      fields[n + 1], fields[n + 2], fields[n + 3], fields[n + 4], n = 'dl', dlabel, 'dx', 0, n + 4
    end
    if new or ask_r ~= 0 then fields[n + 1], fields[n + 2], n = 'dr', c[1] + ask_r, n + 2 end
    if new or ask_t ~= 0 then fields[n + 1], fields[n + 2], n = 'dt', c[2] + ask_t, n + 2 end
    if new or ask_s ~= 0 then fields[n + 1], fields[n + 2], n = 'ds', c[3] + ask_s, n + 2 end
    until_us = math.max(until_us, dend + grace)
  end
  if s.uses_month then
    local new = not s.month_current
    if new then fields[n + 1], fields[n + 2], n = 'ml', mlabel, n + 2 end
    if new or ask_r ~= 0 then fields[n + 1], fields[n + 2], n = 'mr', c[4] + ask_r, n + 2 end
    if new or ask_t ~= 0 then fields[n + 1], fields[n + 2], n = 'mt', c[5] + ask_t, n + 2 end
    if new or ask_s ~= 0 then fields[n + 1], fields[n + 2], n = 'ms', c[6] + ask_s, n + 2 end
    until_us = math.max(until_us, mend + grace)
  end
  if n > 0 then write(s, fields, until_us) end
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
