"""The Lua scripts of :class:`~avatarsdk.RedisLimiter`: each change of the shared state is one atomic script.

The state, under one hash tag (one Redis Cluster slot): ``slots``, a sorted set of slot leases (member: the slot
id, score: the lease's end in ms of Redis's clock); ``queue``, a sorted set of the waiters' tickets in arrival
order (score from the ``seq`` counter); ``tickets``, the same tickets scored by when they lapse unless their
waiter asks again; and one list per ticket, ``wake`` + ticket, that a waiter blocks on (BLPOP) until a slot may
be free for it. Redis's own clock (TIME) times every lease, so the hosts' clocks never matter.
"""

from __future__ import annotations

# Shared by the scripts: Redis's clock; leases that ran out and tickets whose waiter stopped asking (a process
# that died) are dropped; the waiters that fit now (the first free ones in the queue) are woken.
_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function purge(slots, queue, tickets, wake, now)
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
  for _, t in ipairs(redis.call('ZRANGEBYSCORE', tickets, '-inf', now)) do
    redis.call('ZREM', queue, t)
    redis.call('ZREM', tickets, t)
    redis.call('DEL', wake .. t)
  end
end
local function wake_first(slots, queue, wake, limit, ttl)
  local free = limit - redis.call('ZCARD', slots)
  if free <= 0 then return end
  for _, t in ipairs(redis.call('ZRANGE', queue, 0, free - 1)) do
    redis.call('DEL', wake .. t)
    redis.call('RPUSH', wake .. t, 1)
    redis.call('PEXPIRE', wake .. t, ttl)
  end
end
"""

# KEYS: slots, queue, tickets, seq. ARGV: limit, lease ms, ticket, slot id, ticket ttl ms, wake prefix.
# Joins the queue (once per ticket) and keeps the ticket alive; grants the slot when every ticket ahead fits too
# (first come first served). Returns {granted, ms until the first lease ends (-1: none held)}.
ACQUIRE = (
    _PRELUDE
    + """
local slots, queue, tickets, seq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local limit, lease, ticket, slot = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local ttl, wake = tonumber(ARGV[5]), ARGV[6]
local now = now_ms()
purge(slots, queue, tickets, wake, now)
if not redis.call('ZSCORE', queue, ticket) then
  redis.call('ZADD', queue, redis.call('INCR', seq), ticket)
end
redis.call('ZADD', tickets, now + ttl, ticket)
local granted = 0
if redis.call('ZRANK', queue, ticket) < limit - redis.call('ZCARD', slots) then
  redis.call('ZREM', queue, ticket)
  redis.call('ZREM', tickets, ticket)
  redis.call('DEL', wake .. ticket)
  redis.call('ZADD', slots, now + lease, slot)
  granted = 1
end
wake_first(slots, queue, wake, limit, ttl)
local first = redis.call('ZRANGE', slots, 0, 0, 'WITHSCORES')
local until_free = -1
if first[2] then until_free = tonumber(first[2]) - now end
return {granted, until_free}
"""
)

# KEYS: slots, queue, tickets. ARGV: slot id, limit, wake prefix, ticket ttl ms. Gives a slot back.
RELEASE = (
    _PRELUDE
    + """
local slots, queue, tickets = KEYS[1], KEYS[2], KEYS[3]
local limit, wake, ttl = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
redis.call('ZREM', slots, ARGV[1])
purge(slots, queue, tickets, wake, now_ms())
wake_first(slots, queue, wake, limit, ttl)
return 1
"""
)

# KEYS: slots, queue, tickets. ARGV: ticket, limit, wake prefix, ticket ttl ms. A waiter gives up its place.
LEAVE = (
    _PRELUDE
    + """
local slots, queue, tickets = KEYS[1], KEYS[2], KEYS[3]
local ticket, limit, wake, ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
redis.call('ZREM', queue, ticket)
redis.call('ZREM', tickets, ticket)
redis.call('DEL', wake .. ticket)
purge(slots, queue, tickets, wake, now_ms())
wake_first(slots, queue, wake, limit, ttl)
return 1
"""
)

# KEYS: slots. ARGV: lease ms, slot ids. Extends the holder's leases; a lease that had run out is put back (the
# connection it stands for is still open, so it counts) and returned, for the holder to warn about.
RENEW = (
    _PRELUDE
    + """
local now = now_ms()
local lapsed = {}
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if (not score) or tonumber(score) <= now then table.insert(lapsed, ARGV[i]) end
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i])
end
return lapsed
"""
)

# KEYS: slots, tickets. Returns {leases not run out, waiters still asking}.
STATUS = (
    _PRELUDE
    + """
local now = now_ms()
return {redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf'), redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf')}
"""
)
