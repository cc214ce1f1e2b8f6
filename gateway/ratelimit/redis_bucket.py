"""limit-req's leaky buckets in Redis, shared by every gateway using that Redis.

One atomic Lua script per request (never read-then-write), with the time taken from Redis
(`TIME`) so that gateways with skewed clocks agree: the same rule as `bucket.py`, the
bucket a hash of `excess` and `last` (ms) that expires once it has drained.
"""

from __future__ import annotations

from gateway.ratelimit.redis import RedisHandle

# ARGV: rate (requests per second), burst, ms after which an untouched bucket is empty.
# Returns {1, excess in thousandths of a request} when accepted, {0, 0} when refused.
BUCKET_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local excess = 0
local rec = redis.call('HMGET', KEYS[1], 'excess', 'last')
if rec[1] then
    local elapsed = math.abs(now - tonumber(rec[2]))
    excess = math.max(tonumber(rec[1]) - rate * elapsed / 1000 + 1, 0)
    if excess > burst then
        return {0, 0}
    end
end
redis.call('HSET', KEYS[1], 'excess', tostring(excess), 'last', tostring(now))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return {1, math.floor(excess * 1000)}
"""


class RedisBucketStore:
    """A leaky bucket per key in Redis: one script call per request."""

    def __init__(
        self, handle: RedisHandle, prefix: str, rate: float, burst: float, timeout_s: float
    ) -> None:
        self.handle = handle
        self.prefix = prefix
        self.rate = rate
        self.args: list[int | float] = [rate, burst, max(1, int((burst + 1) / rate * 1000) + 1)]
        self.timeout = timeout_s

    async def incoming(self, key: str) -> float | None:
        """Seconds to wait, or None when refused; raises RedisUnavailable (down, refused,
        or no answer within the conf's `redis_timeout`)."""
        accepted, excess = await self.handle.run_script_within(
            self.timeout, BUCKET_SCRIPT, self.prefix + key, self.args
        )
        return excess / 1000 / self.rate if accepted else None
