"""SQLite store: fingerprints that survive restarts, shared by processes on one machine.

One table per namespace, ``fp_<namespace>(key INTEGER PRIMARY KEY, count, first_seen)``:
the 64-bit key *is* the rowid, so a stored key costs about 21 bytes on disk (no separate
index) unless a TTL or capacity is set, which adds an index on ``first_seen``. A small
``mt_meta`` table keeps each namespace's size and clock, so ``len`` is O(1).

Durability: the database runs in WAL mode and every :meth:`SQLiteStore.observe` is one
``BEGIN IMMEDIATE ... COMMIT`` transaction that has committed before it returns. An
acknowledged fingerprint therefore survives a restart and ``kill -9`` of any process
(with the default ``synchronous="normal"``; ``"full"`` also survives power loss or an
OS crash, at the cost of an fsync, a few milliseconds, per call). ``BEGIN IMMEDIATE``
takes the write lock before reading counts, so concurrent writers from several
processes serialize and every query still gets its exact prior count; waiting writers
retry for ``timeout`` seconds.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from movingtarget.errors import ConfigError, DataError
from movingtarget.memory.stores._policy import (
    ClosedOnExit,
    check_bounds,
    keep_after_eviction,
    settle_batch,
    settle_small,
)

SYNCHRONOUS = ("normal", "full")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_CACHE_KIB = 65536  # page cache per connection: keeps the b-tree's inner pages hot
# random 64-bit keys touch a different leaf page per key: a longer WAL (about 80 MB)
# lets many batches' updates of one page share a checkpoint write (2-3x faster inserts
# past a million keys)
_WAL_CHECKPOINT_PAGES = 20_000
_NO_CLOCK = -(2**63)
_SMALL_BATCH = 32  # up to this many keys, plain Python beats numpy's per-call cost


def check_namespace(namespace: str, where: str) -> str:
    """``namespace`` if it is 1-64 letters, digits or underscores, else :class:`ConfigError`."""
    if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
        raise ConfigError(
            f"{where}: namespace must be 1-64 letters, digits or underscores, got {namespace!r}"
        )
    return namespace


def sqlite_failure(path: str, err: sqlite3.Error, doing: str, timeout: float) -> DataError:
    """One :class:`DataError` naming ``path``, what could not be done and why."""
    text = str(err)
    if "locked" in text or "busy" in text:
        hint = f"another process held the write lock for more than {timeout:g} s"
    elif "not a database" in text or "malformed" in text or "corrupt" in text:
        hint = "the file is not a readable SQLite database (corrupt?); it was left untouched"
    elif "unable to open" in text:
        hint = "the file cannot be opened or created (a directory? no permission?)"
    elif "readonly" in text or "permission" in text.lower():
        hint = "the file or its directory is not writable"
    else:
        hint = text
    return DataError(f"SQLite store {path}: cannot {doing}: {hint} ({text})")


def connect_wal(path: str, timeout: float) -> sqlite3.Connection:
    """A connection to ``path`` in autocommit mode (transactions are explicit), usable
    from the gateway's threads, in WAL mode; closed again if WAL cannot be entered."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        enter_wal(conn, timeout)
    except sqlite3.Error:
        conn.close()
        raise
    return conn


@contextmanager
def transaction(
    connect: Callable[[], sqlite3.Connection],
    *,
    write: bool,
    fail: Callable[[sqlite3.Error], Exception],
) -> Iterator[sqlite3.Connection]:
    """The connection ``connect()`` gives; with ``write``, inside one ``BEGIN
    IMMEDIATE`` transaction, rolled back if the block raises. Reads are single
    statements, each already an atomic snapshot, so they skip BEGIN/COMMIT. An
    ``sqlite3.Error`` becomes ``fail(err)`` (one message naming the file), the
    transaction rolled back first. The caller holds its own lock."""
    conn: sqlite3.Connection | None = None
    try:
        conn = connect()
        if not write:
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    except sqlite3.Error as err:
        if conn is not None and conn.in_transaction:
            conn.execute("ROLLBACK")
        raise fail(err) from None


class SQLiteFile(ClosedOnExit):
    """One SQLite file holding a table of the gateway's state beside the memory (the
    correction labels, the labeling queue): its path, checked namespace, lock, a
    connection opened at first use and :func:`transaction` under the lock."""

    def __init__(self, path: str | os.PathLike[str], namespace: str, what: str, timeout: float):
        self.path = os.fspath(path)
        self.namespace = check_namespace(namespace, f"{what} {self.path}")
        self.timeout = float(timeout)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect_wal(self.path, self.timeout)
        return self._conn

    @contextmanager
    def _transaction(self, doing: str, *, write: bool) -> Iterator[sqlite3.Connection]:
        fail = lambda err: sqlite_failure(self.path, err, doing, self.timeout)  # noqa: E731
        with self._lock, transaction(self._connection, write=write, fail=fail) as conn:
            yield conn

    def close(self) -> None:
        """Close the connection (every change is already committed)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def enter_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch ``conn``'s database to WAL mode, retrying for up to ``timeout`` seconds.

    Switching a fresh file takes a lock that SQLite does not wait for: when several
    processes open one new file at once (replicas started together), all but one get
    "database is locked" at once, whatever the connection's own timeout.
    """
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            return
        except sqlite3.OperationalError as err:
            busy = "locked" in str(err) or "busy" in str(err)
            if not busy or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(2 * pause, 0.05)


class SQLiteStore(ClosedOnExit):
    """A persistent store in one SQLite file (WAL mode), safe for several processes.

    Parameters
    ----------
    path:
        The database file; created if missing (its directory must exist).
    namespace:
        Separates memories kept in one file (letters, digits, underscores).
    ttl:
        An entry expires ``ttl`` after its first-seen time (``now`` units); see below.
    capacity:
        Most distinct keys kept; see below.
    synchronous:
        ``"normal"`` (survives any process crash, ``kill -9`` included) or ``"full"``
        (also survives power loss; one fsync per :meth:`observe`).
    timeout:
        Seconds a writer waits for another process's transaction before failing.

    Bounds: a query at time ``t`` whose entry has ``first_seen <= t - ttl`` counts as
    new and restarts the entry; after each batch, entries with ``first_seen <=
    clock - ttl`` (``clock``: the latest ``now`` observed) are deleted. When more than
    ``capacity`` keys are stored after a batch, exactly the excess is deleted, oldest
    first-seen first (ties: the lower key, a signed int64 here), in the same
    transaction: a full store holds ``capacity`` keys, and a batch's eviction walks only
    the excess along the first-seen index.

    Errors: a file that is not a database, is corrupt, unwritable, or locked for longer
    than ``timeout`` raises one :class:`~movingtarget.errors.DataError` naming the path;
    the failed transaction is rolled back, so stored state is never lost.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> path = tempfile.mkdtemp() + "/memory.db"
    >>> with SQLiteStore(path) as s:
    ...     s.observe(np.array([1, 2, 1], np.uint64), np.arange(3)).tolist()
    [0, 0, 1]
    >>> with SQLiteStore(path) as s:  # reopened: still remembers
    ...     s.lookup(np.array([1, 3], np.uint64)).tolist(), len(s)
    ([2, 0], 2)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        namespace: str = "mt",
        ttl: int | None = None,
        capacity: int | None = None,
        synchronous: str = "normal",
        timeout: float = 30.0,
    ) -> None:
        self.path = os.fspath(path)
        where = f"SQLite store {self.path}"
        self.namespace = check_namespace(namespace, where)
        check_bounds(ttl, capacity, where)
        if synchronous not in SYNCHRONOUS:
            raise ConfigError(
                f"{where}: synchronous must be one of {SYNCHRONOUS}, got {synchronous!r}"
            )
        self.ttl = None if ttl is None else int(ttl)
        self.capacity = None if capacity is None else int(capacity)
        self.synchronous = synchronous
        self.timeout = float(timeout)
        self._table = f"fp_{self.namespace}"
        self._lock = threading.RLock()
        self._orphans: list[sqlite3.Connection] = []
        self._conn = self._connect()

    # -- connection and errors -----------------------------------------------------
    def _fail(self, err: sqlite3.Error, doing: str) -> DataError:
        return sqlite_failure(self.path, err, doing, self.timeout)

    def _connect(self) -> sqlite3.Connection:
        parent = Path(self.path).resolve().parent
        if self.path != ":memory:" and not parent.is_dir():
            raise DataError(f"SQLite store {self.path}: directory {parent} does not exist")
        conn: sqlite3.Connection | None = None
        try:
            # autocommit mode: transactions are opened explicitly, BEGIN IMMEDIATE for writes
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            enter_wal(conn, self.timeout)
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
            conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_CHECKPOINT_PAGES}")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS mt_meta (namespace TEXT PRIMARY KEY,"
                " size INTEGER NOT NULL, clock INTEGER NOT NULL)"
            )
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} (key INTEGER PRIMARY KEY,"
                " count INTEGER NOT NULL, first_seen INTEGER NOT NULL)"
            )
            if self.ttl is not None or self.capacity is not None:
                # expiry and eviction walk keys by first-seen time
                conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {self._table}_first ON {self._table}(first_seen)"
                )
            if (
                conn.execute(
                    "SELECT 1 FROM mt_meta WHERE namespace = ?", (self.namespace,)
                ).fetchone()
                is None
            ):
                size = conn.execute(f"SELECT count(*) FROM {self._table}").fetchone()[0]
                conn.execute(
                    "INSERT INTO mt_meta VALUES (?, ?, ?)", (self.namespace, size, _NO_CLOCK)
                )
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            if conn is not None:
                conn.close()
            raise self._fail(err, "open it") from None
        self._pid = os.getpid()
        return conn

    def _connection(self) -> sqlite3.Connection:
        if os.getpid() != self._pid:
            # a forked child must not use its parent's connection; closing it here could
            # drop this process's POSIX locks on the file, so it is kept, unused
            self._orphans.append(self._conn)
            self._conn = self._connect()
        return self._conn

    @contextmanager
    def _transaction(self, doing: str, *, write: bool) -> Iterator[sqlite3.Connection]:
        """The connection, under this object's lock (see :func:`transaction`)."""
        fail = lambda err: self._fail(err, doing)  # noqa: E731
        with self._lock, transaction(self._connection, write=write, fail=fail) as conn:
            yield conn

    # -- reading -----------------------------------------------------------------
    def _fetch(
        self, conn: sqlite3.Connection, uniq: NDArray[np.int64]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
        """Stored (key, count, first_seen) of the keys among ``uniq`` that are stored."""
        # one statement whatever the batch size: the keys travel as one JSON array
        rows = conn.execute(
            f"SELECT f.key, f.count, f.first_seen FROM json_each(?) j"
            f" JOIN {self._table} f ON f.key = j.value",
            (json.dumps(uniq.tolist()),),
        ).fetchall()
        if not rows:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        flat = np.fromiter(itertools.chain.from_iterable(rows), np.int64, count=3 * len(rows))
        table = flat.reshape(-1, 3)
        return table[:, 0], table[:, 1], table[:, 2]

    # -- the Store interface -------------------------------------------------------
    def observe(self, keys: NDArray[np.uint64], now: NDArray[np.int64]) -> NDArray[np.int64]:
        """Record ``keys`` seen at times ``now`` in one committed transaction; return
        how many times each had been seen before it."""
        signed = np.ascontiguousarray(keys, dtype=np.uint64).view(np.int64)
        times = np.broadcast_to(np.asarray(now, dtype=np.int64), signed.shape)
        if len(signed) == 0:
            return np.zeros(0, dtype=np.int64)
        if len(signed) <= _SMALL_BATCH:
            return self._observe_small(signed.tolist(), times.tolist())
        uniq = np.unique(signed)
        with self._transaction("record fingerprints", write=True) as conn:
            found, counts, first = self._fetch(conn, uniq)
            prior, uniq, count, first_seen = settle_batch(
                signed, times, found, counts, first, self.ttl
            )
            self._write(
                conn,
                zip(uniq.tolist(), count.tolist(), first_seen.tolist(), strict=True),
                added=len(uniq) - len(found),
                latest=int(times.max()),
            )
        return prior

    def _observe_small(self, keys: list[int], now: list[int]) -> NDArray[np.int64]:
        uniq = sorted(set(keys))
        with self._transaction("record fingerprints", write=True) as conn:
            rows = conn.execute(
                f"SELECT key, count, first_seen FROM {self._table}"
                f" WHERE key IN ({','.join('?' * len(uniq))})",
                uniq,
            ).fetchall()
            entries = {k: [c, f] for k, c, f in rows}
            prior = settle_small(keys, now, entries, self.ttl)
            self._write(
                conn,
                ((k, c, f) for k, (c, f) in entries.items()),
                added=len(entries) - len(rows),
                latest=max(now),
            )
        return np.array(prior, dtype=np.int64)

    def _write(
        self,
        conn: sqlite3.Connection,
        entries: Iterable[tuple[int, int, int]],
        *,
        added: int,
        latest: int,
    ) -> None:
        """Write back a batch's entries, then apply the TTL and capacity (same transaction)."""
        conn.executemany(
            f"INSERT INTO {self._table} (key, count, first_seen) VALUES (?, ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET count = excluded.count,"
            " first_seen = excluded.first_seen",
            entries,
        )
        size, clock = conn.execute(
            "SELECT size, clock FROM mt_meta WHERE namespace = ?", (self.namespace,)
        ).fetchone()
        size += added
        clock = max(int(clock), latest)
        if self.ttl is not None:
            size -= conn.execute(
                f"DELETE FROM {self._table} WHERE first_seen <= ?", (clock - self.ttl,)
            ).rowcount
        if self.capacity is not None and size > self.capacity:
            excess = size - keep_after_eviction(self.capacity)
            # the (first_seen) index holds the rowid too: this walks the excess only
            size -= conn.execute(
                f"DELETE FROM {self._table} WHERE key IN (SELECT key FROM {self._table}"
                " ORDER BY first_seen, key LIMIT ?)",
                (excess,),
            ).rowcount
        conn.execute(
            "UPDATE mt_meta SET size = ?, clock = ? WHERE namespace = ?",
            (size, clock, self.namespace),
        )

    def lookup(self, keys: NDArray[np.uint64]) -> NDArray[np.int64]:
        """Counts of ``keys`` (0 for unseen or expired) without recording them."""
        signed = np.ascontiguousarray(keys, dtype=np.uint64).view(np.int64)
        out = np.zeros(len(signed), dtype=np.int64)
        if len(signed) == 0:
            return out
        if len(signed) <= _SMALL_BATCH:
            wanted = signed.tolist()
            with self._transaction("look up fingerprints", write=False) as conn:
                stored = dict(
                    conn.execute(
                        f"SELECT key, count FROM {self._table}"
                        f" WHERE key IN ({','.join('?' * len(wanted))})",
                        wanted,
                    ).fetchall()
                )
            return np.array([stored.get(k, 0) for k in wanted], dtype=np.int64)
        uniq, inverse = np.unique(signed, return_inverse=True)
        with self._transaction("look up fingerprints", write=False) as conn:
            found, counts, _ = self._fetch(conn, uniq)
        per_key = np.zeros(len(uniq), dtype=np.int64)
        per_key[np.searchsorted(uniq, found)] = counts
        return per_key[inverse.reshape(-1)]

    def first_seen(self, key: int) -> int | None:
        """Time the key was first observed (in its current entry), or None."""
        signed = int(np.array([key], dtype=np.uint64).view(np.int64)[0])
        with self._transaction("look up a fingerprint", write=False) as conn:
            row = conn.execute(
                f"SELECT first_seen FROM {self._table} WHERE key = ?", (signed,)
            ).fetchone()
        return None if row is None else int(row[0])

    def clear(self) -> None:
        """Forget every key of this namespace (other namespaces in the file stay)."""
        with self._transaction("clear the store", write=True) as conn:
            conn.execute(f"DELETE FROM {self._table}")
            conn.execute(
                "UPDATE mt_meta SET size = 0, clock = ? WHERE namespace = ?",
                (_NO_CLOCK, self.namespace),
            )

    def __len__(self) -> int:
        with self._transaction("count fingerprints", write=False) as conn:
            row = conn.execute(
                "SELECT size FROM mt_meta WHERE namespace = ?", (self.namespace,)
            ).fetchone()
        return int(row[0])

    # -- lifetime ----------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (committed data is already on disk)."""
        with self._lock:
            if os.getpid() == self._pid:
                self._conn.close()

    def __repr__(self) -> str:
        return (
            f"SQLiteStore({self.path!r}, namespace={self.namespace!r}, ttl={self.ttl},"
            f" capacity={self.capacity})"
        )
