"""Correction memory's back ends: fingerprint keys and the labels a labeler gave them.

The correction mechanism (:class:`~movingtarget.defenses.correct.Correct`) answers a
query that matches a labeled input with its label. What it keeps is a map from keyed
fingerprint digests (exact, or the robust band keys of near matching) to a class: like
every store of the memory box, hashes, never raw inputs. The latest label of a key wins.

=================  =============================================================
back end           where
=================  =============================================================
:class:`LabelTable`    this process (sorted arrays; the default of an experiment)
:class:`SQLiteLabels`  one SQLite file: table ``lb_<namespace>(key, label)`` (its
                       size in ``lb_meta``); one machine, survives restarts
:class:`RedisLabels`   one Redis hash ``{<namespace>}:labels`` (field: the 8-byte key,
                       value: the class): shared by replicas, survives a gateway restart
=================  =============================================================

:func:`open_labels` opens the one a store URL names (``memory://``, ``sqlite:///PATH``,
``redis://HOST:PORT/DB``), so the gateway keeps corrections where ``--store`` keeps the
memory.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from movingtarget.memory.stores._policy import ClosedOnExit
from movingtarget.memory.stores.sqlite_store import SQLiteFile, check_namespace

if TYPE_CHECKING:
    import redis

__all__ = ["LabelMemory", "LabelTable", "RedisLabels", "SQLiteLabels", "open_labels"]


@runtime_checkable
class LabelMemory(Protocol):
    """Fingerprint keys and their labels (the latest label of a key wins).

    >>> isinstance(LabelTable(), LabelMemory)
    True
    """

    def add(self, keys: NDArray[np.uint64], labels: NDArray[np.int64]) -> None:
        """Remember ``labels`` for ``keys`` (later ones replace earlier ones)."""
        ...

    def lookup(self, keys: NDArray[np.uint64]) -> NDArray[np.int64]:
        """The label of each key, -1 where none is known (any shape)."""
        ...

    def clear(self) -> None:
        """Forget every label."""
        ...

    def __len__(self) -> int:
        """Number of keys with a label."""
        ...


def _latest(keys: NDArray[np.uint64], labels: NDArray[np.int64]) -> tuple[list[int], list[int]]:
    """Keys (as signed int64) and labels of one batch, the last label of a repeated key
    kept, as plain ints for a database."""
    k = np.asarray(keys, np.uint64).ravel()
    y = np.asarray(labels, np.int64).ravel()
    uniq, first = np.unique(k[::-1], return_index=True)
    return uniq.view(np.int64).tolist(), y[::-1][first].tolist()


class LabelTable:
    """Keys and labels in this process, sorted for vectorized look-ups.

    Examples
    --------
    >>> t = LabelTable()
    >>> t.add(np.array([5, 3], np.uint64), np.array([1, 2]))
    >>> t.add(np.array([5], np.uint64), np.array([0]))     # relabeled
    >>> t.lookup(np.array([3, 4, 5], np.uint64)).tolist()
    [2, -1, 0]
    """

    def __init__(self) -> None:
        self.keys = np.zeros(0, np.uint64)
        self.labels = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def add(self, keys: NDArray[np.uint64], labels: NDArray[np.int64]) -> None:
        """Remember ``labels`` for ``keys`` (later ones replace earlier ones)."""
        k = np.concatenate([self.keys, np.asarray(keys, np.uint64).ravel()])
        y = np.concatenate([self.labels, np.asarray(labels, np.int64).ravel()])
        # np.unique keeps the first of equal keys: reverse so the latest label is first
        uniq, first = np.unique(k[::-1], return_index=True)
        self.keys, self.labels = uniq, y[::-1][first]

    def lookup(self, keys: NDArray[np.uint64]) -> NDArray[np.int64]:
        """The label of each key, -1 where none is known (any shape)."""
        if not len(self.keys):
            return np.full(np.shape(keys), -1, np.int64)
        pos = np.searchsorted(self.keys, keys)
        pos = np.minimum(pos, len(self.keys) - 1)
        return np.where(self.keys[pos] == keys, self.labels[pos], -1)

    def clear(self) -> None:
        """Forget every label."""
        self.keys, self.labels = np.zeros(0, np.uint64), np.zeros(0, np.int64)

    def ping(self) -> None:
        """Nothing to reach: in this process."""


class SQLiteLabels(SQLiteFile):
    """Labels in a SQLite file (WAL mode), safe for several processes on one machine:
    every :meth:`add` is one committed transaction, so a label acknowledged to a labeler
    survives a restart (and ``kill -9``).

    Errors (a file that is not a database, unwritable, locked too long) are one
    :class:`~movingtarget.errors.DataError` naming the path; the gateway reads it as an
    outage (503).

    Examples
    --------
    >>> import tempfile
    >>> path = tempfile.mkdtemp() + "/labels.db"
    >>> with SQLiteLabels(path) as t:
    ...     t.add(np.array([5, 2**63 + 1], np.uint64), np.array([1, 2]))
    >>> with SQLiteLabels(path) as t:  # reopened: still there
    ...     t.lookup(np.array([2**63 + 1, 5, 6], np.uint64)).tolist(), len(t)
    ([2, 1, -1], 2)
    """

    def __init__(
        self, path: str | os.PathLike[str], *, namespace: str = "mt", timeout: float = 30.0
    ):
        super().__init__(path, namespace, "SQLite labels", timeout)
        self._table = f"lb_{self.namespace}"
        with self._transaction("open it", write=True) as conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} (key INTEGER PRIMARY KEY,"
                " label INTEGER NOT NULL)"
            )
            # the size, kept beside the table: the correction gate asks it every batch,
            # and count(*) walks the whole table
            conn.execute(
                "CREATE TABLE IF NOT EXISTS lb_meta (namespace TEXT PRIMARY KEY,"
                " size INTEGER NOT NULL)"
            )
            conn.execute(
                f"INSERT OR IGNORE INTO lb_meta SELECT ?, count(*) FROM {self._table}",
                (self.namespace,),
            )

    def add(self, keys: NDArray[np.uint64], labels: NDArray[np.int64]) -> None:
        """Remember ``labels`` for ``keys`` in one committed transaction."""
        k, y = _latest(keys, labels)
        if not k:
            return
        with self._transaction("record labels", write=True) as conn:
            known = conn.execute(
                f"SELECT count(*) FROM json_each(?) j JOIN {self._table} t ON t.key = j.value",
                (json.dumps(k),),
            ).fetchone()[0]
            conn.executemany(
                f"INSERT INTO {self._table} (key, label) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET label = excluded.label",
                zip(k, y, strict=True),
            )
            conn.execute(
                "UPDATE lb_meta SET size = size + ? WHERE namespace = ?",
                (len(k) - int(known), self.namespace),
            )

    def lookup(self, keys: NDArray[np.uint64]) -> NDArray[np.int64]:
        """The label of each key, -1 where none is known (any shape)."""
        arr = np.asarray(keys, np.uint64)
        flat = np.ascontiguousarray(arr.ravel()).view(np.int64)
        out = np.full(flat.shape, -1, np.int64)
        if not len(flat):
            return out.reshape(arr.shape)
        uniq, inverse = np.unique(flat, return_inverse=True)
        with self._transaction("look up labels", write=False) as conn:
            rows = conn.execute(
                f"SELECT t.key, t.label FROM json_each(?) j JOIN {self._table} t"
                " ON t.key = j.value",
                (json.dumps(uniq.tolist()),),
            ).fetchall()
        per_key = np.full(len(uniq), -1, np.int64)
        if rows:
            found = np.array(rows, np.int64)
            per_key[np.searchsorted(uniq, found[:, 0])] = found[:, 1]
        return per_key[inverse.reshape(-1)].reshape(arr.shape)

    def clear(self) -> None:
        """Forget every label of this namespace (other namespaces in the file stay)."""
        with self._transaction("clear labels", write=True) as conn:
            conn.execute(f"DELETE FROM {self._table}")
            conn.execute("UPDATE lb_meta SET size = 0 WHERE namespace = ?", (self.namespace,))

    def __len__(self) -> int:
        with self._transaction("count labels", write=False) as conn:
            row = conn.execute(
                "SELECT size FROM lb_meta WHERE namespace = ?", (self.namespace,)
            ).fetchone()
        return int(row[0])

    def ping(self) -> None:
        """A read that changes nothing (readiness)."""
        with self._transaction("read labels", write=False) as conn:
            conn.execute(f"SELECT 1 FROM {self._table} LIMIT 1").fetchall()


class RedisLabels(ClosedOnExit):
    """Labels in one Redis hash, shared by every replica that opens the namespace: a
    label one replica learns corrects the next batch of every replica.

    An unreachable server raises :class:`~movingtarget.errors.Unavailable` (the gateway's
    503), any other server error a :class:`~movingtarget.errors.DataError`.

    Examples
    --------
    >>> t = RedisLabels("redis://127.0.0.1:6379/0", namespace="doc")  # doctest: +SKIP
    >>> t.add(np.array([5], np.uint64), np.array([3]))                 # doctest: +SKIP
    >>> t.lookup(np.array([5, 6], np.uint64)).tolist()                 # doctest: +SKIP
    [3, -1]
    """

    def __init__(self, url_or_client: str | redis.Redis, *, namespace: str = "mt") -> None:
        from movingtarget.memory.stores.redis_store import connect_redis, redis_errors

        if isinstance(url_or_client, str):
            self.client, self.url = connect_redis(url_or_client)
        else:
            self.client, self.url = url_or_client, "redis"
        self.namespace = check_namespace(namespace, f"Redis labels {self.url}")
        self._hash = f"{{{self.namespace}}}:labels"
        self._errors = redis_errors
        self.ping()

    def add(self, keys: NDArray[np.uint64], labels: NDArray[np.int64]) -> None:
        """Remember ``labels`` for ``keys`` (one HSET: atomic for every replica)."""
        k, y = _latest(keys, labels)
        if not k:
            return
        fields = {
            int(key).to_bytes(8, "little", signed=True): str(v) for key, v in zip(k, y, strict=True)
        }
        with self._errors(self.url, "record labels"):
            self.client.hset(self._hash, mapping=fields)  # type: ignore[arg-type]

    def lookup(self, keys: NDArray[np.uint64]) -> NDArray[np.int64]:
        """The label of each key, -1 where none is known (any shape): one HMGET."""
        arr = np.asarray(keys, np.uint64)
        flat = np.ascontiguousarray(arr.ravel())
        if not len(flat):
            return np.full(arr.shape, -1, np.int64)
        uniq, inverse = np.unique(flat, return_inverse=True)
        raw = uniq.astype("<u8").tobytes()
        fields = [raw[i : i + 8] for i in range(0, len(raw), 8)]
        with self._errors(self.url, "look up labels"):
            values = self.client.hmget(self._hash, fields)
        per_key = np.array([-1 if v is None else int(v) for v in values], np.int64)
        return per_key[inverse.reshape(-1)].reshape(arr.shape)

    def clear(self) -> None:
        """Forget every label of this namespace (for every replica)."""
        with self._errors(self.url, "clear labels"):
            self.client.unlink(self._hash)

    def __len__(self) -> int:
        with self._errors(self.url, "count labels"):
            return int(self.client.hlen(self._hash))

    def ping(self) -> None:
        """A round trip that changes nothing (readiness)."""
        with self._errors(self.url, "reach the server"):
            self.client.ping()

    def close(self) -> None:
        """Release this client's connections (the labels stay on the server)."""
        self.client.close()


def open_labels(url: str, *, namespace: str) -> LabelTable | SQLiteLabels | RedisLabels:
    """The label memory where the store ``url`` lives (see the module docs)."""
    from movingtarget.memory.stores.urls import backend_of

    kind, where = backend_of(url, "corrections")
    if kind == "memory":
        return LabelTable()
    if kind == "sqlite":
        return SQLiteLabels(where, namespace=namespace)
    return RedisLabels(where, namespace=namespace)
