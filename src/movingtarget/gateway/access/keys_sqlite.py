"""API keys, limit state and label feedback in one SQLite file (one machine)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from movingtarget.errors import ConfigError, DataError
from movingtarget.gateway.access.base import (
    Grant,
    KeyLimits,
    KeyRecord,
    mint,
    revoked_key,
    unknown_key,
)
from movingtarget.gateway.access.limits import (
    BucketState,
    charge,
    never_fits,
    over_limit,
    too_large,
)
from movingtarget.memory.stores.sqlite_store import enter_wal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    digest TEXT NOT NULL UNIQUE,
    rate REAL NOT NULL,
    burst REAL NOT NULL,
    quota INTEGER,
    quota_window INTEGER NOT NULL,
    created REAL NOT NULL,
    revoked REAL
);
CREATE TABLE IF NOT EXISTS buckets (
    key_id INTEGER PRIMARY KEY,
    tokens REAL NOT NULL,
    updated REAL NOT NULL,
    window INTEGER NOT NULL,
    used INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    query_id TEXT NOT NULL,
    key_id INTEGER NOT NULL,
    label INTEGER NOT NULL,
    time REAL NOT NULL,
    PRIMARY KEY (query_id, key_id)
);
"""


class SQLiteKeyStore:
    """Keys in a SQLite file (WAL mode, so several processes on one machine may share it).

    Each ``authorize`` is one ``BEGIN IMMEDIATE`` transaction: lookup, quota and token
    bucket are read and written together, so concurrent requests never overspend.

    Examples
    --------
    >>> import tempfile, os
    >>> store = SQLiteKeyStore(os.path.join(tempfile.mkdtemp(), "k.db"))
    >>> rec, token = store.create("ci", KeyLimits(rate=0))
    >>> [k.name for k in store.list_keys()]
    ['ci']
    """

    def __init__(
        self, path: str | Path, *, url: str | None = None, durability: str = "process"
    ) -> None:
        from movingtarget.memory.stores.durability import sqlite_synchronous

        synchronous = sqlite_synchronous(durability).upper()
        self.durability = durability
        self.path = Path(path)
        self.url = url or f"sqlite:///{self.path}"
        self._lock = threading.Lock()
        try:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit mode: transactions are explicit (BEGIN IMMEDIATE)
            self._db = sqlite3.connect(
                str(self.path), timeout=10.0, isolation_level=None, check_same_thread=False
            )
            enter_wal(self._db, timeout=10.0)
            # NORMAL survives a killed process; FULL also power loss (durability=power)
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise DataError(f"keys store {self.path}: cannot open ({exc})") from None

    # -- management ----------------------------------------------------------------

    def _record(self, row: tuple[Any, ...]) -> KeyRecord:
        kid, name, rate, burst, quota, window, created, revoked = row
        return KeyRecord(int(kid), name, KeyLimits(rate, burst, quota, window), created, revoked)

    _COLS = "id, name, rate, burst, quota, quota_window, created, revoked"

    def create(self, name: str, limits: KeyLimits) -> tuple[KeyRecord, str]:
        limits, token, digest = mint(name, limits)
        now = time.time()
        with self._lock:
            try:
                cur = self._db.execute(
                    "INSERT INTO keys (name, digest, rate, burst, quota, quota_window, created)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        digest,
                        limits.rate,
                        limits.burst,
                        limits.quota,
                        limits.quota_window,
                        now,
                    ),
                )
            except sqlite3.IntegrityError:
                raise ConfigError(f"a key named {name!r} already exists") from None
        return KeyRecord(int(cur.lastrowid or 0), name, limits, now), token

    def list_keys(self) -> list[KeyRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT {self._COLS} FROM keys ORDER BY id").fetchall()
        return [self._record(r) for r in rows]

    def revoke(self, name: str) -> KeyRecord:
        with self._lock:
            self._db.execute(
                "UPDATE keys SET revoked = ? WHERE name = ? AND revoked IS NULL",
                (time.time(), name),
            )
            row = self._db.execute(
                f"SELECT {self._COLS} FROM keys WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            raise ConfigError(f"no key named {name!r}")
        return self._record(row)

    # -- hot path ------------------------------------------------------------------

    def authorize(self, digest: str, cost: int) -> Grant:
        with self._lock:
            db = self._db
            row = db.execute(
                f"SELECT {self._COLS} FROM keys WHERE digest = ?", (digest,)
            ).fetchone()
            if row is None:
                raise unknown_key()
            rec = self._record(row)
            if not rec.active:
                raise revoked_key(rec.name)
            if (rec.limits.rate == 0 and rec.limits.quota is None) or cost == 0:
                return Grant(rec.id, rec.name)  # nothing to charge: no write transaction
            limit = never_fits(rec.limits, cost)
            if limit:
                size = rec.limits.burst if limit == "burst" else rec.limits.quota
                raise too_large(rec.name, limit, float(size or 0), cost)
            db.execute("BEGIN IMMEDIATE")
            try:
                # read again inside the transaction: another process may have revoked it
                row = db.execute("SELECT revoked FROM keys WHERE id = ?", (rec.id,)).fetchone()
                if row is None or row[0] is not None:
                    raise revoked_key(rec.name)
                b = db.execute(
                    "SELECT tokens, updated, window, used FROM buckets WHERE key_id = ?",
                    (rec.id,),
                ).fetchone()
                now = time.time()
                state = BucketState(*b) if b else BucketState.full(rec.limits, now)
                decision = charge(rec.limits, state, cost, now)
                if not decision.allowed:
                    raise over_limit(rec.name, decision.limit, decision.retry_after)
                s = decision.state
                db.execute(
                    "INSERT OR REPLACE INTO buckets (key_id, tokens, updated, window, used)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (rec.id, s.tokens, s.updated, s.window, s.used),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return Grant(rec.id, rec.name)

    # -- feedback ------------------------------------------------------------------

    def add_feedback(self, key_id: int, items: list[tuple[str, int]]) -> int:
        now = time.time()
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO feedback (query_id, key_id, label, time)"
                " VALUES (?, ?, ?, ?)",
                [(q, key_id, int(label), now) for q, label in items],
            )
        return len(items)

    def feedback(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT query_id, key_id, label, time FROM feedback ORDER BY time, query_id"
            ).fetchall()
        return [dict(zip(("query_id", "key_id", "label", "time"), r, strict=True)) for r in rows]

    def ping(self) -> None:
        with self._lock:
            self._db.execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            self._db.close()
