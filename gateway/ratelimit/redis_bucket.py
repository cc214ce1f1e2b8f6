"""limit-req's leaky buckets in Redis, shared by every gateway using that Redis.

One atomic Lua script per decision (never read-then-write), with the time taken from Redis
(`TIME`) so that gateways with skewed clocks agree: the same rule as `bucket.py`, the
bucket a hash of `excess` and `last` (ms) that expires once it has drained. Requests for
the same key that arrive together share one call (`BatchedScript`).
"""

from __future__ import annotations

from gateway.ratelimit.redis import BatchedScript, RedisHandle

# ARGV: rate (requests per second), burst, ms after which an untouched bucket is empty, and
# the batch's size n. Decides for n requests at Redis's `now`, one after the other as n
# calls would: returns per request the excess in thousandths of a request when accepted,
# -1 when refused (which leaves the bucket as it was).
BUCKET_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local rec = redis.call('HMGET', KEYS[1], 'excess', 'last')
local known = rec[1] ~= false
local excess, last = tonumber(rec[1]) or 0, tonumber(rec[2]) or now
local out, accepted = {}, false
for i = 1, n do
    local e = 0
    if known then
        e = math.max(excess - rate * math.abs(now - last) / 1000 + 1, 0)
    end
    if known and e > burst then
        out[i] = -1
    else
        excess, last, known, accepted = e, now, true, true
        out[i] = math.floor(e * 1000)
    end
end
if accepted then
    redis.call('HSET', KEYS[1], 'excess', tostring(excess), 'last', tostring(now))
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
end
return out
"""


class RedisBucketStore:
    """A leaky bucket per key in Redis."""

    def __init__(
        self, handle: RedisHandle, prefix: str, rate: float, burst: float, timeout_s: float
    ) -> None:
        self.prefix = prefix
        self.rate = rate
        self.args: list[int | float] = [rate, burst, max(1, int((burst + 1) / rate * 1000) + 1)]
        self.calls = BatchedScript(handle, BUCKET_SCRIPT, timeout_s)

    async def incoming(self, key: str) -> float | None:
        """Seconds to wait, or None when refused; raises RedisUnavailable (down, refused,
        or no answer within the conf's `redis_timeout`)."""
        result, position = await self.calls.call(self.prefix + key, self.args)
        excess = result[position - 1]
        return excess / 1000 / self.rate if excess >= 0 else None
