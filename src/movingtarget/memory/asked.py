"""The gateway's labeling queue: queries the defense asked labels for, kept for labelers.

A defense that learns from labels marks troubling queries (``Answers.ask``: a repeat,
a near repeat, member disagreement, ...). The gateway offers them to this queue, where
a labeler (a key named ``--labeler-key``) reads them and labels them by query id
through ``/v1/feedback``, on any replica and after a restart.

Unlike the memory's fingerprints, an entry holds the **input itself** (float32 bytes):
a labeler has to see what it labels, and a replica other than the one that answered has
to learn from it. That is why the queue is bounded and holds only asked queries:

* an input already queued (the same exact fingerprint) is not queued again, so an
  attacker repeating one mistake holds one entry;
* at most ``capacity`` entries in all and ``per_client`` per client (the defense's
  client id, a key's numeric id): one key cannot fill the queue; an ask over either bound
  is dropped (the query is still answered as the defense decided);
* a labeled entry leaves the queue (:meth:`remove`).

=====================  ============================================================
back end               layout
=====================  ============================================================
:class:`InProcessQueue`  dicts in this process
:class:`SQLiteQueue`     table ``lq_<namespace>(query_id, fp, client, time, reason, x)``
:class:`RedisQueue`      hashes ``{ns}:lq:entries`` (query id -> entry),
                         ``{ns}:lq:fp`` (fingerprint -> query id), ``{ns}:lq:clients``
                         (client -> entries held) and a sorted set ``{ns}:lq:order``
                         (query id by time); each offer and removal is one Lua script
=====================  ============================================================
"""

from __future__ import annotations

import os
import struct
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from movingtarget.errors import ConfigError
from movingtarget.memory.stores._policy import ClosedOnExit
from movingtarget.memory.stores.sqlite_store import SQLiteFile, check_namespace

__all__ = [
    "AskedQueue",
    "InProcessQueue",
    "QueueEntry",
    "RedisQueue",
    "SQLiteQueue",
    "open_queue",
]


@dataclass(frozen=True)
class QueueEntry:
    """One asked query: its id, its input's exact fingerprint, the client that sent it,
    when, why it was asked (an answer reason) and the input (flat float32)."""

    query_id: str
    fp: int
    client: int
    time: int
    reason: str
    x: NDArray[np.float32]

    def pack(self) -> bytes:
        """The entry as bytes (fingerprint, client, time, reason, input)."""
        reason = self.reason.encode()
        head = struct.pack("<QqqB", self.fp, self.client, self.time, len(reason))
        return head + reason + np.ascontiguousarray(self.x, "<f4").tobytes()

    @classmethod
    def unpack(cls, query_id: str, blob: bytes) -> QueueEntry:
        """The entry :meth:`pack` wrote."""
        fp, client, time, n = struct.unpack_from("<QqqB", blob)
        start = struct.calcsize("<QqqB")
        reason = blob[start : start + n].decode()
        x = np.frombuffer(blob[start + n :], "<f4").astype(np.float32)
        return cls(query_id, int(fp), int(client), int(time), reason, x)


@runtime_checkable
class AskedQueue(Protocol):
    """Where asked queries wait for a labeler (see the module docs)."""

    capacity: int
    per_client: int

    def offer(self, entries: Sequence[QueueEntry]) -> int:
        """Queue ``entries`` within the bounds, skipping inputs already queued; returns
        how many were queued."""
        ...

    def get(self, query_ids: Sequence[str]) -> dict[str, QueueEntry]:
        """The queued entries among ``query_ids``."""
        ...

    def remove(self, query_ids: Sequence[str]) -> int:
        """Take labeled entries out; returns how many were queued."""
        ...

    def pending(self, limit: int) -> list[QueueEntry]:
        """Up to ``limit`` entries, oldest first."""
        ...

    def ping(self) -> None:
        """A read that changes nothing; raises when the back end cannot be reached."""
        ...

    def __len__(self) -> int: ...


def check_queue_bounds(capacity: int, per_client: int) -> None:
    """ConfigError unless both bounds are integers >= 1."""
    for name, value in (("capacity", capacity), ("per-key", per_client)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"--labeling-queue-{name} must be an integer >= 1, got {value!r}")


class InProcessQueue:
    """The labeling queue in this process (gone when it ends).

    Examples
    --------
    >>> q = InProcessQueue(capacity=10, per_client=1)
    >>> e = lambda i, c: QueueEntry(f"q{i}", i, c, i, "repeat", np.zeros(2, np.float32))
    >>> q.offer([e(1, 7), e(2, 7), e(3, 8)])      # client 7 holds one entry at most
    2
    >>> [x.query_id for x in q.pending(10)], q.remove(["q1"]), len(q)
    (['q1', 'q3'], 1, 1)
    """

    def __init__(self, *, capacity: int = 10_000, per_client: int = 100) -> None:
        check_queue_bounds(capacity, per_client)
        self.capacity, self.per_client = capacity, per_client
        self._entries: dict[str, QueueEntry] = {}
        self._by_fp: dict[int, str] = {}
        self._held: Counter[int] = Counter()
        self._lock = threading.Lock()

    def offer(self, entries: Sequence[QueueEntry]) -> int:
        added = 0
        with self._lock:
            for e in entries:
                if e.fp in self._by_fp or e.query_id in self._entries:
                    continue
                if len(self._entries) >= self.capacity or self._held[e.client] >= self.per_client:
                    continue
                self._entries[e.query_id] = e
                self._by_fp[e.fp] = e.query_id
                self._held[e.client] += 1
                added += 1
        return added

    def get(self, query_ids: Sequence[str]) -> dict[str, QueueEntry]:
        with self._lock:
            return {q: self._entries[q] for q in query_ids if q in self._entries}

    def remove(self, query_ids: Sequence[str]) -> int:
        removed = 0
        with self._lock:
            for q in query_ids:
                e = self._entries.pop(q, None)
                if e is None:
                    continue
                del self._by_fp[e.fp]
                self._held[e.client] -= 1
                removed += 1
        return removed

    def pending(self, limit: int) -> list[QueueEntry]:
        with self._lock:
            ordered = sorted(self._entries.values(), key=lambda e: (e.time, e.query_id))
        return ordered[: max(0, limit)]

    def ping(self) -> None:
        """Nothing to reach: in this process."""

    def __len__(self) -> int:
        return len(self._entries)


class SQLiteQueue(SQLiteFile):
    """The labeling queue in a SQLite file: survives restarts, shared by processes on one
    machine. Each offer and removal is one ``BEGIN IMMEDIATE`` transaction, so the bounds
    hold across processes. Errors are one :class:`~movingtarget.errors.DataError` naming
    the path (the gateway's 503).

    Examples
    --------
    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/queue.db"
    >>> e = QueueEntry("q1", 2**64 - 1, 3, 10, "near-repeat", np.ones(2, np.float32))
    >>> with SQLiteQueue(path) as q:
    ...     q.offer([e, e])
    1
    >>> with SQLiteQueue(path) as q:   # reopened: still queued
    ...     q.get(["q1"])["q1"].reason, len(q)
    ('near-repeat', 1)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        namespace: str = "mt",
        capacity: int = 10_000,
        per_client: int = 100,
        timeout: float = 30.0,
    ) -> None:
        check_queue_bounds(capacity, per_client)
        self.capacity, self.per_client = capacity, per_client
        super().__init__(path, namespace, "SQLite labeling queue", timeout)
        self._table = f"lq_{self.namespace}"
        with self._transaction("open it", write=True) as conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} (query_id TEXT PRIMARY KEY,"
                " fp INTEGER NOT NULL UNIQUE, client INTEGER NOT NULL, time INTEGER NOT NULL,"
                " reason TEXT NOT NULL, x BLOB NOT NULL)"
            )
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS {self._table}_time ON {self._table}(time, query_id)"
            )
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS {self._table}_client ON {self._table}(client)"
            )

    @staticmethod
    def _signed(fp: int) -> int:
        return fp - (1 << 64) if fp >= 1 << 63 else fp

    def _entry(self, row: tuple[str, int, int, int, str, bytes]) -> QueueEntry:
        qid, fp, client, time, reason, x = row
        flat = np.frombuffer(x, "<f4").astype(np.float32)
        return QueueEntry(qid, int(fp) & (2**64 - 1), int(client), int(time), reason, flat)

    def offer(self, entries: Sequence[QueueEntry]) -> int:
        if not entries:
            return 0
        added = 0
        with self._transaction("queue asked queries", write=True) as conn:
            total = int(conn.execute(f"SELECT count(*) FROM {self._table}").fetchone()[0])
            held: dict[int, int] = {}
            for e in entries:
                if total >= self.capacity:
                    break
                if e.client not in held:
                    held[e.client] = int(
                        conn.execute(
                            f"SELECT count(*) FROM {self._table} WHERE client = ?", (e.client,)
                        ).fetchone()[0]
                    )
                if held[e.client] >= self.per_client:
                    continue
                cur = conn.execute(
                    f"INSERT OR IGNORE INTO {self._table} VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        e.query_id,
                        self._signed(e.fp),
                        e.client,
                        e.time,
                        e.reason,
                        np.ascontiguousarray(e.x, "<f4").tobytes(),
                    ),
                )
                if cur.rowcount:  # 0: the input (or the id) is queued already
                    held[e.client] += 1
                    total += 1
                    added += 1
        return added

    def get(self, query_ids: Sequence[str]) -> dict[str, QueueEntry]:
        if not query_ids:
            return {}
        marks = ",".join("?" * len(query_ids))
        with self._transaction("read the labeling queue", write=False) as conn:
            rows = conn.execute(
                f"SELECT * FROM {self._table} WHERE query_id IN ({marks})", list(query_ids)
            ).fetchall()
        return {row[0]: self._entry(row) for row in rows}

    def remove(self, query_ids: Sequence[str]) -> int:
        if not query_ids:
            return 0
        marks = ",".join("?" * len(query_ids))
        with self._transaction("take labeled queries off the queue", write=True) as conn:
            return int(
                conn.execute(
                    f"DELETE FROM {self._table} WHERE query_id IN ({marks})", list(query_ids)
                ).rowcount
            )

    def pending(self, limit: int) -> list[QueueEntry]:
        with self._transaction("read the labeling queue", write=False) as conn:
            rows = conn.execute(
                f"SELECT * FROM {self._table} ORDER BY time, query_id LIMIT ?", (max(0, limit),)
            ).fetchall()
        return [self._entry(r) for r in rows]

    def ping(self) -> None:
        with self._transaction("read the labeling queue", write=False) as conn:
            conn.execute(f"SELECT 1 FROM {self._table} LIMIT 1").fetchall()

    def __len__(self) -> int:
        with self._transaction("count the labeling queue", write=False) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {self._table}").fetchone()[0])


# KEYS: entries, fps, order, clients. ARGV: capacity, per_client, then for each entry:
# query id, fingerprint (8 bytes), client (8 bytes), time, packed entry. Returns how
# many were queued.
_OFFER = """
local cap, per = tonumber(ARGV[1]), tonumber(ARGV[2])
local total = redis.call('HLEN', KEYS[1])
local added = 0
for i = 3, #ARGV, 5 do
  local qid, fp, client, t, blob = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if total >= cap then break end
  if redis.call('HEXISTS', KEYS[2], fp) == 0 and redis.call('HEXISTS', KEYS[1], qid) == 0 then
    local held = tonumber(redis.call('HGET', KEYS[4], client) or '0')
    if held < per then
      redis.call('HSET', KEYS[1], qid, blob)
      redis.call('HSET', KEYS[2], fp, qid)
      redis.call('ZADD', KEYS[3], t, qid)
      redis.call('HINCRBY', KEYS[4], client, 1)
      total = total + 1
      added = added + 1
    end
  end
end
return added
"""

# KEYS: as _OFFER. ARGV: query ids. The packed entry starts with the fingerprint and
# the client (8 bytes each), the fields of the other hashes. Returns how many were queued.
_REMOVE = """
local removed = 0
for i = 1, #ARGV do
  local blob = redis.call('HGET', KEYS[1], ARGV[i])
  if blob then
    local fp, client = string.sub(blob, 1, 8), string.sub(blob, 9, 16)
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], fp)
    redis.call('ZREM', KEYS[3], ARGV[i])
    if redis.call('HINCRBY', KEYS[4], client, -1) <= 0 then redis.call('HDEL', KEYS[4], client) end
    removed = removed + 1
  end
end
return removed
"""


class RedisQueue(ClosedOnExit):
    """The labeling queue in Redis, shared by every replica that opens the namespace;
    each offer and removal is one atomic script, so the bounds hold across replicas. An
    unreachable server raises :class:`~movingtarget.errors.Unavailable` (the gateway's
    503), any other server error a :class:`~movingtarget.errors.DataError`."""

    def __init__(
        self, url: str, *, namespace: str = "mt", capacity: int = 10_000, per_client: int = 100
    ) -> None:
        from movingtarget.memory.stores.redis_store import connect_redis, redis_errors

        check_queue_bounds(capacity, per_client)
        self.capacity, self.per_client = capacity, per_client
        self.client, self.url = connect_redis(url)
        self.namespace = check_namespace(namespace, f"Redis labeling queue {self.url}")
        tag = f"{{{self.namespace}}}:lq"
        self._keys = [f"{tag}:entries", f"{tag}:fp", f"{tag}:order", f"{tag}:clients"]
        self._errors = redis_errors
        self._offer = self.client.register_script(_OFFER)
        self._remove = self.client.register_script(_REMOVE)
        self.ping()

    def offer(self, entries: Sequence[QueueEntry]) -> int:
        if not entries:
            return 0
        args: list[bytes | str | int] = [self.capacity, self.per_client]
        for e in entries:
            blob = e.pack()
            args += [e.query_id, blob[:8], blob[8:16], e.time, blob]
        with self._errors(self.url, "queue asked queries"):
            return int(self._offer(keys=self._keys, args=args))

    def get(self, query_ids: Sequence[str]) -> dict[str, QueueEntry]:
        if not query_ids:
            return {}
        with self._errors(self.url, "read the labeling queue"):
            blobs: list[bytes | None] = self.client.hmget(self._keys[0], list(query_ids))  # type: ignore[assignment]
        return {q: QueueEntry.unpack(q, b) for q, b in zip(query_ids, blobs, strict=True) if b}

    def remove(self, query_ids: Sequence[str]) -> int:
        if not query_ids:
            return 0
        with self._errors(self.url, "take labeled queries off the queue"):
            return int(self._remove(keys=self._keys, args=list(query_ids)))

    def pending(self, limit: int) -> list[QueueEntry]:
        if limit <= 0:
            return []
        with self._errors(self.url, "read the labeling queue"):
            members: list[bytes] = self.client.zrange(self._keys[2], 0, limit - 1)  # type: ignore[assignment]
            ids = [m.decode() for m in members]
            blobs: list[bytes | None] = self.client.hmget(self._keys[0], ids) if ids else []  # type: ignore[assignment]
        return [QueueEntry.unpack(q, b) for q, b in zip(ids, blobs, strict=True) if b]

    def ping(self) -> None:
        with self._errors(self.url, "reach the server"):
            self.client.ping()

    def __len__(self) -> int:
        with self._errors(self.url, "count the labeling queue"):
            return int(self.client.hlen(self._keys[0]))

    def close(self) -> None:
        """Release this client's connections (the queue stays on the server)."""
        self.client.close()


def open_queue(
    url: str, *, namespace: str, capacity: int = 10_000, per_client: int = 100
) -> InProcessQueue | SQLiteQueue | RedisQueue:
    """The labeling queue where the store ``url`` lives (``memory://``, ``sqlite:///PATH``,
    ``redis://HOST:PORT/DB``)."""
    from movingtarget.memory.stores.urls import backend_of

    kind, where = backend_of(url, "a labeling queue")
    if kind == "memory":
        return InProcessQueue(capacity=capacity, per_client=per_client)
    if kind == "sqlite":
        return SQLiteQueue(where, namespace=namespace, capacity=capacity, per_client=per_client)
    return RedisQueue(where, namespace=namespace, capacity=capacity, per_client=per_client)
