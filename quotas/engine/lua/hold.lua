-- hold.lua: put a subject on hold; reserve.lua refuses it until the hold expires.
--
-- KEYS[1]  the subject's hold key
-- ARGV[1]  the hold's length (ms)
--
-- Sets the hold unless a longer one is already there; returns 1.

if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
