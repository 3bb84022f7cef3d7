"""Redis store: one memory shared by processes and hosts (e.g. gateway replicas).

Layout, for namespace ``ns`` (the braces are a Redis Cluster hash tag, so all of a
namespace lives on one shard):

* ``{ns}:b0`` ... ``{ns}:b<B-1>`` — the entries, spread over ``B`` small hashes by the
  key's low bits; field = the 8-byte key, value = 16 bytes
  ``<int64 count><int64 first_seen>`` (little-endian). Small hashes stay in Redis's
  compact *listpack* encoding (up to ``hash-max-listpack-entries``, 128 by default),
  about 30-40 bytes a key against about 90 in one big hash. ``B`` is fixed when the
  namespace is created: ``2**17`` (compact up to about 10M keys), or sized from the
  capacity; beyond that the hashes convert to the ordinary encoding (still correct,
  just larger).
* ``{ns}:age`` — a sorted set key -> first-seen time, kept only when a TTL or capacity
  is set (expiry and eviction walk it oldest first); about 100 more bytes a key. Its
  members are the keys big-endian with the sign bit flipped, so that entries of one
  first-seen time sort (and are evicted) in the order of the keys as signed int64, as
  in every store.
* ``{ns}:meta`` — the bucket count, size, clock (latest ``now`` observed), index flag
  (``2``; a namespace indexed by an earlier version, flag ``1``, whose members were the
  keys' own bytes, is re-encoded once by the first write of this version, which reads
  the whole set: all clients of a namespace should run one version).

Every batch is one atomic step for all clients: a Lua script walks the keys in arrival
order (so duplicates inside a batch and concurrent clients both get exact prior
counts); a batch larger than one script call (16,384 keys) runs as several calls inside
one ``MULTI``/``EXEC``. Keys and results travel as packed binary strings, one argument
each, so the client does no per-key work. The scripts touch bucket hashes derived from
the keys; all share the namespace's hash tag, so this holds on Redis Cluster too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from movingtarget._optional import require
from movingtarget.errors import ConfigError, DataError, Unavailable
from movingtarget.memory.stores._policy import ClosedOnExit, check_bounds, keep_after_eviction
from movingtarget.memory.stores.durability import check_redis_durability
from movingtarget.memory.stores.redaction import redact
from movingtarget.memory.stores.sqlite_store import check_namespace

if TYPE_CHECKING:
    import redis

CHUNK = 16_384
_CONNECT_TIMEOUT_S = 5.0
# a batch is one atomic step on the server: a million keys take seconds, longer than
# redis-py's default 5 s reply timeout
_REPLY_TIMEOUT_S = 60.0

DEFAULT_BUCKETS = 2**17
_MIN_BUCKETS, _MAX_BUCKETS = 2**10, 2**22
_ENTRIES_PER_BUCKET = 64  # well under hash-max-listpack-entries (128) at full capacity

# shared by the scripts: ``bucket(k)`` names the hash of an 8-byte key: the prefix, then
# the key's low ``log2(nb)`` bits as little-endian bytes (Python: ``_bucket_name``).
# Raw bytes, not a decimal number: formatting numbers is the slow part of Lua here.
_BUCKET = """
local function namer(base, nb)
  local bits = 0
  while 2 ^ bits < nb do bits = bits + 1 end
  local full, rem, sub, byte = math.floor(bits / 8), bits % 8, string.sub, string.byte
  if rem == 0 then
    return function(k) return base .. sub(k, 1, full) end
  end
  local last = {}
  for v = 0, 255 do last[v + 1] = string.char(v % 2 ^ rem) end
  return function(k) return base .. sub(k, 1, full) .. last[byte(k, full + 1) + 1] end
end
"""

# KEYS: bucket prefix, age, meta. ARGV: keys (8 bytes each), times (8 bytes each), ttl
# (0: none), want_index (0/1), settle (0/1), capacity (0: none), keep, buckets. Returns
# the prior counts packed as little-endian int64.
_OBSERVE = (
    _BUCKET
    + """
local base, age, meta = KEYS[1], KEYS[2], KEYS[3]
local kb, tb = ARGV[1], ARGV[2]
local ttl = tonumber(ARGV[3])
local bucket = namer(base, tonumber(ARGV[8]))
local spack, sunpack, sub = struct.pack, struct.unpack, string.sub
-- sorted-set members: the key big-endian with its sign bit flipped, so that members of
-- one first-seen time sort like the keys as signed int64 (the shared tie order)
local function member(k)
  local r = string.reverse(k)
  return string.char((string.byte(r, 1) + 128) % 256) .. sub(r, 2)
end
local function field(m)
  return string.reverse(string.char((string.byte(m, 1) + 128) % 256) .. sub(m, 2))
end
local flag = redis.call('HGET', meta, 'indexed')
if flag == '1' then
  -- indexed before members were encoded (the key's own bytes): re-encode them, once
  local old = redis.call('ZRANGE', age, 0, -1, 'WITHSCORES')
  redis.call('DEL', age)
  for i = 1, #old, 2 do redis.call('ZADD', age, old[i + 1], member(old[i])) end
  redis.call('HSET', meta, 'indexed', '2')
  flag = '2'
end
local indexed = flag == '2'
local size = tonumber(redis.call('HGET', meta, 'size') or '0')
if ARGV[4] == '1' and not indexed then
  if size > 0 then
    return redis.error_reply('UNINDEXED namespace holds entries without first-seen index')
  end
  redis.call('HSET', meta, 'indexed', '2')
  indexed = true
end
local out = {}
local tmax = nil
for i = 1, #kb / 8 do
  local j = 8 * i - 7
  local k, tbytes = sub(kb, j, j + 7), sub(tb, j, j + 7)
  local t = sunpack('<i8', tbytes)
  if tmax == nil or t > tmax then tmax = t end
  local b = bucket(k)
  local v = redis.call('HGET', b, k)
  local c, fbytes = 0, tbytes
  if v then
    c, fbytes = sunpack('<i8', v), sub(v, 9, 16)
    -- an expired entry restarts: count 0, first seen now
    if ttl > 0 and c > 0 and sunpack('<i8', fbytes) <= t - ttl then
      c, fbytes = 0, tbytes
    end
  else
    size = size + 1
  end
  out[i] = spack('<i8', c)
  redis.call('HSET', b, k, spack('<i8', c + 1) .. fbytes)
  if indexed and c == 0 then redis.call('ZADD', age, t, member(k)) end
end
local clock = tonumber(redis.call('HGET', meta, 'clock') or tmax)
if tmax > clock then clock = tmax end
if ARGV[5] == '1' then
  local cap, keep = tonumber(ARGV[6]), tonumber(ARGV[7])
  local function drop(members)
    for _, m in ipairs(members) do
      local k = field(m)
      size = size - redis.call('HDEL', bucket(k), k)
    end
  end
  if ttl > 0 then
    local cutoff = clock - ttl
    local gone = redis.call('ZRANGEBYSCORE', age, '-inf', cutoff)
    if #gone > 0 then
      drop(gone)
      redis.call('ZREMRANGEBYSCORE', age, '-inf', cutoff)
    end
  end
  if cap > 0 and size > cap then
    -- exactly the excess, oldest first: O(excess + log n), never a pass over the set
    local excess = size - keep
    drop(redis.call('ZRANGE', age, 0, excess - 1))
    redis.call('ZREMRANGEBYRANK', age, 0, excess - 1)
  end
end
redis.call('HSET', meta, 'size', string.format('%d', size), 'clock', string.format('%d', clock))
return table.concat(out)
"""
)

# KEYS: bucket prefix. ARGV: keys (8 bytes each), buckets. Returns the counts packed as
# little-endian int64.
_LOOKUP = (
    _BUCKET
    + """
local base, kb, sub = KEYS[1], ARGV[1], string.sub
local bucket = namer(base, tonumber(ARGV[2]))
local zero = string.rep('\\0', 8)
local out = {}
for i = 1, #kb / 8 do
  local k = sub(kb, 8 * i - 7, 8 * i)
  local v = redis.call('HGET', bucket(k), k)
  if v then out[i] = sub(v, 1, 8) else out[i] = zero end
end
return table.concat(out)
"""
)


def buckets_for(capacity: int | None) -> int:
    """Bucket hashes for a new namespace: enough that each stays a compact listpack."""
    if capacity is None:
        return DEFAULT_BUCKETS
    wanted = -(-capacity // _ENTRIES_PER_BUCKET)
    return min(_MAX_BUCKETS, max(_MIN_BUCKETS, 1 << (wanted - 1).bit_length()))


class RedisStore(ClosedOnExit):
    """A store in Redis, shared by every process and host that opens the same namespace.

    Parameters
    ----------
    url_or_client:
        ``redis://[:password@]HOST:PORT/DB`` (also ``rediss://``, ``unix://``) or a
        ``redis.Redis`` client (it must not decode responses).
    namespace:
        Separates memories on one server (letters, digits, underscores).
    ttl:
        An entry expires ``ttl`` after its first-seen time (``now`` units).
    capacity:
        Most distinct keys kept.
    buckets:
        Bucket hashes of a *new* namespace (a power of two); by default ``2**17``, or
        sized from ``capacity``. An existing namespace keeps its own.
    durability:
        ``"process"`` (default) or ``"power"``: the server must then run ``appendonly
        yes`` with ``appendfsync always``, checked at open
        (:mod:`movingtarget.memory.stores.durability`).

    Bounds: a query at time ``t`` whose entry has ``first_seen <= t - ttl`` counts as
    new and restarts the entry; after each batch, entries with ``first_seen <=
    clock - ttl`` are deleted, where the clock is the latest ``now`` any client has
    observed in the namespace. When more than ``capacity`` keys are stored after a
    batch, exactly the excess is deleted, oldest first-seen first (ties: the lower key as
    a signed int64), inside the same atomic step, so a full namespace holds
    ``capacity`` keys and a batch's eviction costs O(excess + log n). All clients of a
    namespace should use the same bounds; a bounded client refuses a namespace filled
    without the first-seen index (clear it first).

    Times travel through Lua numbers (doubles): they must stay within +-2**53, which
    milliseconds since the epoch and arrival indices do by far.

    Errors: a server that cannot be reached raises :class:`~movingtarget.errors.Unavailable`
    naming the URL (password hidden); a server error raises
    :class:`~movingtarget.errors.DataError`.

    Examples
    --------
    >>> s = RedisStore("redis://127.0.0.1:6379/0", namespace="doc")  # doctest: +SKIP
    >>> s.observe(np.array([1, 2, 1], np.uint64), np.arange(3)).tolist()  # doctest: +SKIP
    [0, 0, 1]
    >>> s.lookup(np.array([1, 3], np.uint64)).tolist()  # doctest: +SKIP
    [2, 0]
    """

    def __init__(
        self,
        url_or_client: str | redis.Redis,
        *,
        namespace: str = "mt",
        ttl: int | None = None,
        capacity: int | None = None,
        buckets: int | None = None,
        durability: str = "process",
    ) -> None:
        require("redis", "the Redis memory")  # a missing one: an error naming the extra
        import redis

        self._redis = redis
        if isinstance(url_or_client, str):
            self.url = redact(url_or_client)
            try:
                self.client: redis.Redis = redis.Redis.from_url(
                    url_or_client,
                    socket_connect_timeout=_CONNECT_TIMEOUT_S,
                    socket_timeout=_REPLY_TIMEOUT_S,
                )
            except ValueError as err:
                raise ConfigError(f"Redis store URL {self.url!r}: {err}") from None
        else:
            self.client = url_or_client
            kwargs = self.client.get_connection_kwargs()
            self.url = redact(
                f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
            )
            if kwargs.get("decode_responses"):
                raise ConfigError(
                    f"Redis store {self.url}: the client decodes responses; the store needs"
                    " bytes (create it with decode_responses=False)"
                )
        where = f"Redis store {self.url}"
        self.namespace = check_namespace(namespace, where)
        check_bounds(ttl, capacity, where)
        self.ttl = None if ttl is None else int(ttl)
        self.capacity = None if capacity is None else int(capacity)
        wanted = buckets_for(self.capacity) if buckets is None else int(buckets)
        if wanted < 1 or wanted & (wanted - 1) or wanted > _MAX_BUCKETS:
            raise ConfigError(f"{where}: buckets must be a power of two up to {_MAX_BUCKETS}")
        self._base = f"{{{self.namespace}}}:b".encode()
        self._age = f"{{{self.namespace}}}:age"
        self._meta = f"{{{self.namespace}}}:meta"
        self._observe = self.client.register_script(_OBSERVE)
        self._lookup = self.client.register_script(_LOOKUP)
        with self._errors("connect"):
            self.client.ping()
            check_redis_durability(self.client, durability, where)
            self.durability = durability
            # the first client to create the namespace fixes its bucket count
            self.client.hsetnx(self._meta, "buckets", wanted)
            indexed, size, stored = self.client.hmget(self._meta, "indexed", "size", "buckets")
            self.buckets = int(stored or wanted)
            # "1": indexed by an older version (members re-encoded on its next write)
            if self._bounded and indexed not in (b"1", b"2") and int(size or 0) > 0:
                raise ConfigError(self._unindexed_message())

    # -- helpers -------------------------------------------------------------------
    @property
    def _bounded(self) -> bool:
        return self.ttl is not None or self.capacity is not None

    def _unindexed_message(self) -> str:
        return (
            f"Redis store {self.url}: namespace {self.namespace!r} was filled without a ttl or"
            " capacity, so it has no first-seen index; clear it, or open it without bounds"
        )

    def _bucket_name(self, bucket: int) -> bytes:
        """The hash holding bucket ``bucket`` (what the scripts' ``namer`` computes)."""
        return self._base + bucket.to_bytes((self.buckets.bit_length() + 6) // 8, "little")

    def _errors(self, doing: str) -> _RedisErrors:
        return _RedisErrors(self, doing)

    def _args(self, keys: NDArray[np.int64], times: NDArray[np.int64], settle: bool) -> list[Any]:
        return [
            keys.astype("<i8").tobytes(),
            times.astype("<i8").tobytes(),
            self.ttl or 0,
            int(self._bounded),
            int(settle),
            self.capacity or 0,
            keep_after_eviction(self.capacity) if self.capacity else 0,
            self.buckets,
        ]

    # -- the Store interface -------------------------------------------------------
    def observe(self, keys: NDArray[np.uint64], now: NDArray[np.int64]) -> NDArray[np.int64]:
        """Record ``keys`` seen at times ``now`` as one atomic step; return how many
        times each had been seen before it (by any client)."""
        signed = np.ascontiguousarray(keys, dtype=np.uint64).view(np.int64)
        times = np.broadcast_to(np.asarray(now, dtype=np.int64), signed.shape)
        if len(signed) == 0:
            return np.zeros(0, dtype=np.int64)
        names: list[bytes | str] = [self._base, self._age, self._meta]
        starts = range(0, len(signed), CHUNK)
        with self._errors("record fingerprints"):
            if len(signed) <= CHUNK:
                replies = [self._observe(keys=names, args=self._args(signed, times, True))]
            else:
                # several script calls, one MULTI/EXEC: still one atomic step
                pipe = self.client.pipeline(transaction=True)
                for s in starts:
                    last = s + CHUNK >= len(signed)
                    args = self._args(signed[s : s + CHUNK], times[s : s + CHUNK], last)
                    self._observe(keys=names, args=args, client=pipe)
                replies = pipe.execute()
        return np.frombuffer(b"".join(replies), dtype="<i8").astype(np.int64)

    def lookup(self, keys: NDArray[np.uint64]) -> NDArray[np.int64]:
        """Counts of ``keys`` (0 for unseen or expired) without recording them."""
        signed = np.ascontiguousarray(keys, dtype=np.uint64).view(np.int64)
        if len(signed) == 0:
            return np.zeros(0, dtype=np.int64)
        blobs = [
            signed[s : s + CHUNK].astype("<i8").tobytes() for s in range(0, len(signed), CHUNK)
        ]
        with self._errors("look up fingerprints"):
            if len(blobs) == 1:
                replies = [self._lookup(keys=[self._base], args=[blobs[0], self.buckets])]
            else:
                pipe = self.client.pipeline(transaction=False)
                for blob in blobs:
                    self._lookup(keys=[self._base], args=[blob, self.buckets], client=pipe)
                replies = pipe.execute()
        return np.frombuffer(b"".join(replies), dtype="<i8").astype(np.int64)

    def first_seen(self, key: int) -> int | None:
        """Time the key was first observed (in its current entry), or None."""
        key = int(key) & (2**64 - 1)
        field = key.to_bytes(8, "little")
        with self._errors("look up a fingerprint"):
            value = self.client.hget(self._bucket_name(key & (self.buckets - 1)), field)
        if not isinstance(value, bytes):  # None: not stored
            return None
        return int(np.frombuffer(value[8:16], dtype="<i8")[0])

    def clear(self) -> None:
        """Forget every key of this namespace (for every client)."""
        names = [self._bucket_name(b) for b in range(self.buckets)]
        with self._errors("clear the store"):
            pipe = self.client.pipeline(transaction=True)
            for s in range(0, len(names), 4096):
                pipe.unlink(*names[s : s + 4096])
            pipe.unlink(self._age)
            # the bucket count stays: clients that are open keep using it
            pipe.hdel(self._meta, "size", "clock", "indexed")
            pipe.execute()

    def __len__(self) -> int:
        with self._errors("count fingerprints"):
            return int(self.client.hget(self._meta, "size") or 0)

    # -- lifetime ----------------------------------------------------------------
    def close(self) -> None:
        """Release this client's connections (the shared memory stays on the server)."""
        self.client.close()

    def __repr__(self) -> str:
        return (
            f"RedisStore({self.url!r}, namespace={self.namespace!r}, ttl={self.ttl},"
            f" capacity={self.capacity})"
        )


class _RedisErrors:
    """Turns redis-py exceptions into one clear movingtarget error naming the URL."""

    def __init__(self, store: RedisStore, doing: str) -> None:
        self.store, self.doing = store, doing

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        errors = self.store._redis.exceptions
        where = f"Redis store {self.store.url}"
        if exc is None or not isinstance(exc, errors.RedisError):
            return
        if isinstance(exc, errors.ConnectionError | errors.TimeoutError):
            raise Unavailable(f"{where}: cannot {self.doing}: server unreachable ({exc})") from None
        if "UNINDEXED" in str(exc):
            raise ConfigError(self.store._unindexed_message()) from None
        raise DataError(f"{where}: cannot {self.doing}: {exc}") from None


def connect_redis(url: str) -> tuple[redis.Redis, str]:
    """A client for ``url`` (bytes replies, the store's timeouts) and the URL as it may be
    shown (password hidden); for the gateway's other shared state (corrections, the
    labeling queue) kept beside the memory."""
    require("redis", "the Redis memory")
    import redis

    shown = redact(url)
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=_CONNECT_TIMEOUT_S, socket_timeout=_REPLY_TIMEOUT_S
        )
    except ValueError as err:
        raise ConfigError(f"Redis store URL {shown!r}: {err}") from None
    return client, shown


@contextmanager
def redis_errors(url: str, doing: str) -> Iterator[None]:
    """redis-py errors as one movingtarget error naming ``url`` (password hidden): an
    unreachable server is :class:`Unavailable`, any other error a :class:`DataError`."""
    import redis

    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise Unavailable(
            f"Redis store {url}: cannot {doing}: server unreachable ({exc})"
        ) from None
    except redis.exceptions.RedisError as exc:
        raise DataError(f"Redis store {url}: cannot {doing}: {exc}") from None
