"""API keys, limit state and label feedback in Redis, shared by every gateway replica.

Layout (``ns`` is the namespace, default ``mt``)::

    ns:keys:next           counter of key ids
    ns:keys:name           hash  name   -> id
    ns:keys:digest         hash  digest -> id
    ns:key:ID              hash  name, digest, rate, burst, quota, quota_window, created, revoked
    ns:bucket:ID           hash  tokens, updated, window, used
    ns:feedback            hash  "QUERY_ID KEY_ID" -> "label time"

``authorize`` is one Lua script: lookup, revocation, quota and token bucket are read
and written atomically, with the Redis server's clock, so replicas on different
hosts spend one bucket per key and never overspend it.
"""

from __future__ import annotations

import time
from typing import Any

from movingtarget._optional import require
from movingtarget.errors import ConfigError, DataError, Unavailable
from movingtarget.gateway.access.base import (
    Grant,
    KeyLimits,
    KeyRecord,
    mint,
    revoked_key,
    unknown_key,
)
from movingtarget.gateway.access.limits import over_limit, too_large
from movingtarget.memory.stores.redaction import redact

# The same steps as limits.charge, in Lua: quota first, then the bucket; charge both or none.
_AUTHORIZE = """
local ns, digest, cost = ARGV[1], ARGV[2], tonumber(ARGV[3])
local id = redis.call('HGET', ns .. ':keys:digest', digest)
if not id then return {401} end
local k = redis.call('HMGET', ns .. ':key:' .. id,
                     'name', 'rate', 'burst', 'quota', 'quota_window', 'revoked')
local name = k[1]
if k[6] and k[6] ~= '' then return {403, id, name} end
local rate, burst = tonumber(k[2]), tonumber(k[3])
local quota, qwin = tonumber(k[4]), tonumber(k[5])
if cost == 0 or (rate <= 0 and not quota) then return {200, id, name} end
-- a request no wait lets through (limits.never_fits): 413, not a 429 retried forever
if quota and cost > quota then return {413, id, name, 'quota', tostring(quota)} end
if rate > 0 and cost > burst then return {413, id, name, 'burst', tostring(burst)} end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local bkey = ns .. ':bucket:' .. id
local b = redis.call('HMGET', bkey, 'tokens', 'updated', 'window', 'used')
local tokens = tonumber(b[1]) or burst
local updated = tonumber(b[2]) or now
local window = tonumber(b[3]) or 0
local used = tonumber(b[4]) or 0
if quota then
  local current = math.floor(now / qwin)
  if current ~= window then window = current; used = 0 end
  if used + cost > quota then
    return {429, id, name, 'quota', tostring((current + 1) * qwin - now)}
  end
end
if rate > 0 then
  local elapsed = now - updated
  if elapsed < 0 then elapsed = 0 end
  tokens = math.min(burst, tokens + elapsed * rate)
  if tokens < cost then
    return {429, id, name, 'rate', tostring((cost - tokens) / rate)}
  end
  tokens = tokens - cost
end
redis.call('HSET', bkey, 'tokens', tostring(tokens), 'updated', tostring(now),
           'window', tostring(window), 'used', tostring(used + cost))
return {200, id, name}
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisKeyStore:
    """Keys in Redis (``redis://HOST:PORT/DB``): one store for every replica.

    Examples
    --------
    >>> store = RedisKeyStore("redis://127.0.0.1:6379/0")  # doctest: +SKIP
    >>> store.create("alice", KeyLimits())[0].name          # doctest: +SKIP
    'alice'
    """

    def __init__(self, url: str, *, namespace: str = "mt", durability: str = "process") -> None:
        require("redis", "the Redis key store")  # a missing one: an error naming the extra
        import redis

        self.url = url
        self.ns = namespace
        try:
            self._r = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        except ValueError as exc:
            raise ConfigError(f"keys store {redact(url)!r}: {exc}") from None
        self._authorize = self._r.register_script(_AUTHORIZE)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self._down: tuple[type[BaseException], ...] = (
            redis.ConnectionError,
            redis.TimeoutError,
        )
        self.durability = durability
        if durability != "process":
            from movingtarget.memory.stores.durability import check_redis_durability

            self.ping()  # an unreachable server: Unavailable, before the check
            check_redis_durability(self._r, durability, f"keys store {redact(url)}")

    def _call(self, doing: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._down as exc:
            raise Unavailable(f"keys store {redact(self.url)}: cannot {doing} ({exc})") from None
        except self._errors as exc:
            raise DataError(f"keys store {redact(self.url)}: cannot {doing} ({exc})") from None

    def _key(self, kid: int | str) -> str:
        return f"{self.ns}:key:{_text(kid)}"

    def _record(self, kid: int, h: dict[bytes, bytes]) -> KeyRecord:
        g = {_text(k): _text(v) for k, v in h.items()}
        quota = int(g["quota"]) if g.get("quota") else None
        limits = KeyLimits(float(g["rate"]), float(g["burst"]), quota, int(g["quota_window"]))
        revoked = float(g["revoked"]) if g.get("revoked") else None
        return KeyRecord(kid, g["name"], limits, float(g["created"]), revoked)

    def create(self, name: str, limits: KeyLimits) -> tuple[KeyRecord, str]:
        limits, token, digest = mint(name, limits)
        kid = int(self._call("create a key", self._r.incr, f"{self.ns}:keys:next"))
        if not self._call("create a key", self._r.hsetnx, f"{self.ns}:keys:name", name, kid):
            raise ConfigError(f"a key named {name!r} already exists")
        now = time.time()
        fields = {
            "name": name,
            "digest": digest,
            "rate": repr(limits.rate),
            "burst": repr(limits.burst),
            "quota": "" if limits.quota is None else str(limits.quota),
            "quota_window": str(limits.quota_window),
            "created": repr(now),
            "revoked": "",
        }
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(self._key(kid), mapping=fields)  # type: ignore[arg-type]
        pipe.hset(f"{self.ns}:keys:digest", digest, kid)
        self._call("create a key", pipe.execute)
        return KeyRecord(kid, name, limits, now), token

    def list_keys(self) -> list[KeyRecord]:
        ids = self._call("list keys", self._r.hvals, f"{self.ns}:keys:name")
        out = []
        for kid in sorted(int(i) for i in ids):
            h = self._call("list keys", self._r.hgetall, self._key(kid))
            if h:
                out.append(self._record(kid, h))
        return out

    def revoke(self, name: str) -> KeyRecord:
        kid = self._call("revoke a key", self._r.hget, f"{self.ns}:keys:name", name)
        if kid is None:
            raise ConfigError(f"no key named {name!r}")
        key = self._key(kid)
        h = self._call("revoke a key", self._r.hgetall, key)
        if not h.get(b"revoked"):
            self._call("revoke a key", self._r.hset, key, "revoked", repr(time.time()))
            h = self._call("revoke a key", self._r.hgetall, key)
        return self._record(int(kid), h)

    def authorize(self, digest: str, cost: int) -> Grant:
        res = self._call("check a key", self._authorize, args=[self.ns, digest, int(cost)])
        status = int(res[0])
        if status == 200:
            return Grant(int(res[1]), _text(res[2]))
        if status == 401:
            raise unknown_key()
        name = _text(res[2])
        if status == 403:
            raise revoked_key(name)
        if status == 413:
            raise too_large(name, _text(res[3]), float(_text(res[4])), int(cost))
        raise over_limit(name, _text(res[3]), float(_text(res[4])))

    def add_feedback(self, key_id: int, items: list[tuple[str, int]]) -> int:
        now = repr(time.time())
        if items:
            mapping = {f"{q} {key_id}": f"{int(label)} {now}" for q, label in items}
            self._call("store feedback", self._r.hset, f"{self.ns}:feedback", mapping=mapping)
        return len(items)

    def feedback(self) -> list[dict[str, Any]]:
        h = self._call("read feedback", self._r.hgetall, f"{self.ns}:feedback")
        rows = []
        for k, v in h.items():
            q, kid = _text(k).rsplit(" ", 1)
            label, t = _text(v).split(" ")
            rows.append({"query_id": q, "key_id": int(kid), "label": int(label), "time": float(t)})
        return sorted(rows, key=lambda r: (r["time"], r["query_id"]))

    def ping(self) -> None:
        self._call("reach Redis", self._r.ping)

    def close(self) -> None:
        self._r.close()
