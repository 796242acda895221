-- seed.lua: give a subject's state a day's or a month's counters from the ledger's totals,
-- unless it holds that window already.
--
-- KEYS[1]     the subject's state hash (see reserve.lua)
-- ARGV[1]     "d" or "m": the window's kind
-- ARGV[2]     the window's start (us): its label in the state
-- ARGV[3..5]  requests, tokens, spend (micro-USD) the ledger holds for the window
-- ARGV[6]     how long the state must live, at least (ms): the window's end plus the grace
--
-- Returns 1 if seeded, 0 if the state held the window (another server seeded it first).

local kind = ARGV[1]
if redis.call('HGET', KEYS[1], kind .. 'l') == ARGV[2] then return 0 end
if kind == 'd' then
  redis.call('HSET', KEYS[1], 'dl', ARGV[2], 'dr', ARGV[3], 'dt', ARGV[4], 'ds', ARGV[5], 'dx', 0)
else
  redis.call('HSET', KEYS[1], 'ml', ARGV[2], 'mr', ARGV[3], 'mt', ARGV[4], 'ms', ARGV[5])
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[6]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
end
return 1
