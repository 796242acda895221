-- hold.lua: put a subject on hold; reserve.lua refuses it until the hold ends.
--
-- KEYS[1]  the subject's hold key: lives as long as the hold (read with PTTL by those who
--          watch the subject, such as a chat reservation watching its provider)
-- KEYS[2]  the subject's state hash: its field h is when the hold ends (us), which
--          reserve.lua reads with the rest of the state
-- ARGV[1]  the hold's length (ms)
--
-- Extends a hold, never shortens one; returns 1.

local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then
  redis.call('SET', KEYS[1], '1', 'PX', ms)
  local t = redis.call('TIME')
  local ends = tonumber(t[1]) * 1000000 + tonumber(t[2]) + ms * 1000
  local was = tonumber(redis.call('HGET', KEYS[2], 'h') or '0')
  if ends > was then redis.call('HSET', KEYS[2], 'h', ends) end
  if redis.call('PTTL', KEYS[2]) < ms then redis.call('PEXPIRE', KEYS[2], ms) end
end
return 1
