"""Stores: where the memory box keeps fingerprints (count and first-seen time).

One interface, several back ends. Stores keep keyed hashes, never raw inputs.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from movingtarget._numba import loops
from movingtarget.errors import ConfigError

_MIN_SLOTS = 1024
_MAX_LOAD = 0.6
# tables up to this many slots (96 MB) grow fourfold: each stored key is then moved a
# third of a time on average instead of once; larger ones double, to bound the memory
_QUADRUPLE_BELOW = 1 << 22
_NO_TTL = 0


def _grown(slots: int) -> int:
    return slots * (4 if slots < _QUADRUPLE_BELOW else 2)


def _slots_for(keys: int) -> int:
    """The smallest table (a power of two) that holds ``keys`` within the load limit."""
    return max(_MIN_SLOTS, 1 << math.ceil(math.log2(keys / _MAX_LOAD)))


def occurrences_before(keys: NDArray[np.uint64]) -> NDArray[np.int64]:
    """For each position, how many earlier positions in ``keys`` hold the same key.

    >>> occurrences_before(np.array([5, 7, 5, 5, 7], dtype=np.uint64)).tolist()
    [0, 0, 1, 2, 1]
    """
    order = np.argsort(keys, kind="stable")
    ranked = keys[order]
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = ranked[1:] != ranked[:-1]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(keys)), 0))
    out = np.empty(len(keys), dtype=np.int64)
    out[order] = np.arange(len(keys)) - group_start
    return out


@runtime_checkable
class Store(Protocol):
    """A memory of fingerprints.

    ``observe`` is the one write: it records each key in arrival order and returns
    how many times that key had been seen *before* it (so a key twice in one batch
    is new the first time and a repeat the second).

    Examples
    --------
    >>> isinstance(InProcessStore(), Store)
    True
    """

    def observe(self, keys: NDArray[np.uint64], now: NDArray[np.int64]) -> NDArray[np.int64]:
        """Record ``keys`` (seen at times ``now``); return prior counts."""
        ...

    def lookup(self, keys: NDArray[np.uint64]) -> NDArray[np.int64]:
        """Counts of ``keys`` without recording them."""
        ...

    def clear(self) -> None:
        """Forget everything."""
        ...

    def __len__(self) -> int:
        """Number of distinct keys stored."""
        ...


class InProcessStore:
    """An open-addressing hash table in this process: fastest, gone when it ends.

    One 24-byte row per slot holds a key, its count and its first-seen time, so a key
    costs one memory access. Keys are placed by Fibonacci hashing and linear probing
    (load kept at most 0.6), in compiled loops that take a batch's keys one after the
    other in arrival order (:mod:`movingtarget.memory._hashtable`): a few microseconds
    for a batch of 64 keys, about 10M lookups a second in large batches at 10M stored.
    Tables up to 4M slots grow fourfold, larger ones double.

    Bounds (both optional, ``now`` units for ``ttl``):

    * ``ttl``: an entry expires ``ttl`` after its *first-seen* time; a later query
      with that key counts as new (count 0) and starts a fresh entry;
    * ``capacity``: when more than ``capacity`` distinct keys are stored, the entries
      with the oldest first-seen time are evicted until ``0.9 * capacity`` remain
      (a selection and one in-place pass over the table, so eviction costs O(1)
      amortized per key and allocates nothing). The table grows
      with what it holds, up to the size the capacity needs (40-80 bytes per key of
      capacity); :meth:`preallocate` takes that size at once instead.

    Examples
    --------
    >>> s = InProcessStore()
    >>> s.observe(np.array([1, 2, 1], np.uint64), np.arange(3)).tolist()
    [0, 0, 1]
    >>> s.lookup(np.array([1, 3], np.uint64)).tolist()
    [2, 0]
    >>> s = InProcessStore(ttl=10)
    >>> s.observe(np.array([5, 5], np.uint64), np.array([0, 10])).tolist()
    [0, 0]
    """

    def __init__(self, *, ttl: int | None = None, capacity: int | None = None) -> None:
        if ttl is not None and ttl <= 0:
            raise ConfigError(f"store ttl must be a positive integer, got {ttl!r}")
        if capacity is not None and capacity <= 0:
            raise ConfigError(f"store capacity must be a positive integer, got {capacity!r}")
        self.ttl = ttl
        self.capacity = capacity
        _table_loops()  # load (or compile) them now, not on the first query
        self._clock = np.iinfo(np.int64).min
        # a bounded store grows like an unbounded one, up to the table its capacity needs:
        # its memory follows what it holds (many small per-key memories stay small); the
        # whole table is asked for once here so a capacity this machine cannot hold is a
        # configuration error now, not a failure mid-batch (untouched, it costs nothing)
        self._max_slots = None if capacity is None else _slots_for(capacity)
        self._preallocated = False
        if self._max_slots is not None:
            try:
                np.zeros((self._max_slots, 3), dtype=np.int64)
            except MemoryError:
                raise ConfigError(
                    f"store capacity {capacity} needs a table of {24 * self._max_slots:,} "
                    "bytes, more than this machine can allocate"
                ) from None
        self._allocate(_MIN_SLOTS)

    def preallocate(self) -> None:
        """Size the table for the capacity now and touch all of it, so the store never
        grows (no stall on a batch) nor takes fresh memory while it serves (no page
        faults as keys land): for one long-lived memory, such as a gateway's shared pool,
        whose bound is then also what it holds from the start."""
        if self._max_slots is None:
            raise ConfigError("preallocate needs a store with a capacity")
        self._preallocated = True
        self._rebuild(self._max_slots, np.flatnonzero(self._keys != 0))

    def _allocate(self, slots: int) -> None:
        self._bits = int(slots).bit_length() - 1
        # one row per slot (key, count, first-seen): a key's count and time share its
        # cache line, so a random key costs one memory access instead of three
        self._table = np.zeros((slots, 3), dtype=np.int64)
        if self._preallocated:
            self._table.fill(0)  # fault every page in now, not as keys land
        self._keys = self._table[:, 0].view(np.uint64)  # 0 marks an empty slot
        self._counts = self._table[:, 1]
        self._first = self._table[:, 2]
        self._used = 0

    def _rebuild(self, slots: int, keep: NDArray[np.int64]) -> None:
        # rows in their old slot order land nearly in order in the new table
        rows = self._table[keep]
        self._allocate(slots)
        _table_loops().place(self._table, rows, self._bits)
        self._used = len(rows)

    def _live(self, now: int | None = None) -> NDArray[np.int64]:
        """Slots of the entries not expired at time ``now`` (default: the latest time)."""
        live = self._keys != 0
        if self.ttl is not None:
            live &= self._first > (self._clock if now is None else now) - self.ttl
        return np.flatnonzero(live)

    def _reserve(self, extra: int, oldest: int) -> None:
        slots = len(self._keys)
        if self._used + extra <= _MAX_LOAD * slots:
            return
        # expired entries are dropped whenever the table is rebuilt: those expired for
        # the batch's oldest query, so none of its queries could still count them
        live = self._live(oldest)
        while (len(live) + extra) > _MAX_LOAD * slots:
            slots = _grown(slots)
        if self._max_slots is not None:
            # no larger than the capacity needs, unless one batch overshoots it
            slots = max(min(slots, self._max_slots), _slots_for(len(live) + extra))
        self._rebuild(slots, live)

    def _evict(self) -> None:
        assert self.capacity is not None
        live = self._live()
        if len(live) <= self.capacity:
            return
        keep_n = max(1, int(0.9 * self.capacity))
        # the newest first-seen entries stay; ties broken by slot, deterministic. A
        # selection, not a sort: the keep_n-th newest time in O(n), then all newer
        # entries and the lowest slots among those at exactly that time
        first = self._first[live]
        cutoff = np.partition(first, len(live) - keep_n)[len(live) - keep_n]
        newer = live[first > cutoff]
        tied = live[first == cutoff][: keep_n - len(newer)]
        # emptied in place (no new table to allocate and fault in): expired entries
        # and all but the kept ones go
        drop = (self._keys != 0).view(np.uint8)
        drop[newer] = 0
        drop[tied] = 0
        self._used -= _table_loops().evict(self._table, drop, self._bits)

    def _slots(self, keys: NDArray[np.uint64]) -> NDArray[np.int64]:
        slots = np.empty(len(keys), dtype=np.int64)
        _table_loops().find(self._table, _as_int64(keys), self._bits, slots)
        return slots

    # -- the Store interface -------------------------------------------------------
    def observe(self, keys: NDArray[np.uint64], now: NDArray[np.int64]) -> NDArray[np.int64]:
        signed = _as_int64(keys)
        now = np.ascontiguousarray(now, dtype=np.int64)
        if len(now) != len(signed):
            raise ValueError(f"observe: {len(signed)} keys but {len(now)} times")
        prior = np.empty(len(signed), dtype=np.int64)
        if len(signed) == 0:
            return prior
        self._clock = max(self._clock, int(now.max()))
        self._reserve(len(signed), int(now.min()))  # the table stays put for the batch
        ttl = _NO_TTL if self.ttl is None else self.ttl
        self._used += _table_loops().observe(self._table, signed, now, ttl, self._bits, prior)
        if self.capacity is not None and self._used > self.capacity:
            self._evict()
        return prior

    def lookup(self, keys: NDArray[np.uint64]) -> NDArray[np.int64]:
        slots = self._slots(keys)
        found = slots >= 0
        out = np.zeros(len(slots), dtype=np.int64)
        out[found] = self._counts[slots[found]]
        if self.ttl is not None:
            out[found] *= self._first[slots[found]] > self._clock - self.ttl
        return out

    def first_seen(self, key: int) -> int | None:
        """Time the key was first observed (in its current entry), or None."""
        slot = int(self._slots(np.array([key], dtype=np.uint64))[0])
        if slot < 0 or (self.ttl is not None and self._first[slot] <= self._clock - self.ttl):
            return None
        return int(self._first[slot])

    def clear(self) -> None:
        self._allocate(self._max_slots if self._max_slots and self._preallocated else _MIN_SLOTS)

    def __len__(self) -> int:
        return self._used if self.ttl is None else len(self._live())

    @property
    def nbytes(self) -> int:
        """Memory held by the table, in bytes."""
        return int(self._table.nbytes)


def _table_loops() -> ModuleType:
    return loops("movingtarget.memory._hashtable")


def _as_int64(keys: NDArray[np.uint64]) -> NDArray[np.int64]:
    """Digests as a contiguous int64 view (the compiled loops' key type)."""
    return np.ascontiguousarray(keys, dtype=np.uint64).view(np.int64)
