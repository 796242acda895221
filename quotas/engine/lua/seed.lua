-- seed.lua: create a window hash from the ledger's totals, unless it exists already.
--
-- KEYS[1]  the window hash
-- ARGV[1..3]  requests, tokens, spend (micro-USD) the ledger holds for the window
-- ARGV[4]  time to live (ms)
--
-- Returns 1 if seeded, 0 if the hash was there (another server seeded it first).

if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'r', ARGV[1], 't', ARGV[2], 's', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
