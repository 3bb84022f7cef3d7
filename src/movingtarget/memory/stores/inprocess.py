"""The in-process store: fingerprints (count and first-seen time) in this process.

The default back end of the :class:`~movingtarget.memory.stores.base.Store` interface;
its hash table loops are in :mod:`movingtarget.memory.stores._hashtable`.
"""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np
from numpy.typing import NDArray

from movingtarget._numba import loops
from movingtarget.errors import ConfigError
from movingtarget.memory.stores._policy import keep_after_eviction

_MIN_SLOTS = 1024
_MAX_LOAD = 0.6
# tables up to this many slots (96 MB) grow fourfold: each stored key is then moved a
# third of a time on average instead of once; larger ones double, to bound the memory
_QUADRUPLE_BELOW = 1 << 22
_NO_TTL = 0
_NO_BOUND = -1
_MIN_NODES = 1024


def _grown(slots: int) -> int:
    return slots * (4 if slots < _QUADRUPLE_BELOW else 2)


def _slots_for(keys: int) -> int:
    """The smallest table (a power of two) that holds ``keys`` within the load limit."""
    return max(_MIN_SLOTS, 1 << math.ceil(math.log2(keys / _MAX_LOAD)))


class InProcessStore:
    """An open-addressing hash table in this process: fastest, gone when it ends.

    One 24-byte row per slot holds a key, its count and its first-seen time, so a key
    costs one memory access; a heap of 16-byte ``(first_seen, key)`` nodes, one per
    entry (plus the few left stale by TTL restarts), finds the oldest entries. Keys are
    placed by Fibonacci hashing and linear probing (load kept at most 0.6), in compiled
    loops that take a batch's keys one after the other in arrival order
    (:mod:`movingtarget.memory.stores._hashtable`): a few microseconds for a batch of 64 keys,
    about 10M lookups a second in large batches at 10M stored. Tables up to 4M slots
    grow fourfold, larger ones double.

    Bounds (both optional, ``now`` units for ``ttl``):

    * ``ttl``: an entry expires ``ttl`` after its *first-seen* time; a later query
      with that key counts as new (count 0) and starts a fresh entry;
    * ``capacity``: when more than ``capacity`` distinct keys are stored after a batch,
      exactly the excess is evicted, oldest first-seen first (ties: the lower key as a
      signed int64), so a full store holds ``capacity`` entries. Each evicted entry is
      popped off the heap and its slot emptied in place (backward-shift deletion): a
      batch pays O(excess * log n), never a pass over the table, and allocates nothing.
      Expired entries leave the same way after each batch. The table grows with what
      it holds, up to the size the capacity needs (40-80 bytes per key of capacity),
      and so does the heap (16-32 bytes per entry held; 18 per key of capacity once
      preallocated); :meth:`preallocate` takes both sizes at once instead. A store
      with neither bound keeps no heap.

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
        self._empty_heap()
        #: entries the latest batch removed (expired or evicted); no other entry was touched
        self.last_removed = 0

    def preallocate(self) -> None:
        """Size the table and the first-seen heap for the capacity now and touch all of
        them, so the store never grows (no stall on a batch) nor takes fresh memory while
        it serves (no page faults as keys land): for one long-lived memory, such as a
        gateway's shared pool, whose bound is then also what it holds from the start."""
        if self._max_slots is None:
            raise ConfigError("preallocate needs a store with a capacity")
        assert self.capacity is not None
        self._preallocated = True
        self._rebuild(self._max_slots, np.flatnonzero(self._keys != 0))
        # room for a full store's nodes and a batch's new ones, touched now as well
        self._resize_heap(max(len(self._heap), self.capacity + max(_MIN_NODES, self.capacity // 8)))

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

    def _empty_heap(self) -> None:
        if not self._preallocated:
            # a store that never forgets needs no heap (no nodes are pushed into none)
            bounded = self.ttl is not None or self.capacity is not None
            self._heap = np.zeros((_MIN_NODES if bounded else 0, 2), dtype=np.int64)
        self._nodes = np.zeros(1, dtype=np.int64)  # the heap's size

    def _resize_heap(self, length: int) -> None:
        heap = np.zeros((length, 2), dtype=np.int64)
        if self._preallocated:
            heap.fill(0)  # fault every page in now
        n = int(self._nodes[0])
        heap[:n] = self._heap[:n]
        self._heap = heap

    def _index(self) -> None:
        """Rebuild the heap from the table: one node per entry. A sorted array is a
        heap; done when stale nodes outnumber live ones, so its cost is amortized."""
        held = np.flatnonzero(self._keys != 0)
        keys = self._table[held, 0]
        keys[keys == _table_loops()._STANDIN] = 0  # nodes hold the key itself
        order = np.lexsort((keys, self._first[held]))
        self._nodes[0] = 0
        if len(self._heap) < len(held):
            self._resize_heap(len(held))
        self._heap[: len(held), 0] = self._first[held][order]
        self._heap[: len(held), 1] = keys[order]
        self._nodes[0] = len(held)

    def _heap_room(self, extra: int) -> None:
        """Room for ``extra`` more nodes (one per query, at most)."""
        if int(self._nodes[0]) + extra <= len(self._heap):
            return
        if int(self._nodes[0]) > 2 * self._used + _MIN_NODES:
            self._index()  # mostly stale nodes: drop them
        if int(self._nodes[0]) + extra > len(self._heap):
            self._resize_heap(max(2 * len(self._heap), int(self._nodes[0]) + extra))

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

    def _shed(self) -> None:
        """Forget the entries expired at the clock, then evict the excess over the
        capacity, oldest first: only the nodes popped and the slots emptied are touched."""
        ttl = _NO_TTL if self.ttl is None else self.ttl
        keep = _NO_BOUND if self.capacity is None else keep_after_eviction(self.capacity)
        self.last_removed = _table_loops().shed(
            self._table, self._heap, self._nodes, self._bits, ttl, self._clock, keep, self._used
        )
        self._used -= self.last_removed

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
        if len(self._heap):
            self._heap_room(len(signed))
        ttl = _NO_TTL if self.ttl is None else self.ttl
        self._used += _table_loops().observe(
            self._table, signed, now, ttl, self._bits, prior, self._heap, self._nodes
        )
        if self.ttl is not None or self.capacity is not None:
            self._shed()
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
        self._empty_heap()

    def __len__(self) -> int:
        # expired entries leave after every batch, so every stored entry is live
        return self._used

    @property
    def heap_nodes(self) -> int:
        """Nodes in the first-seen heap: one per entry, plus stale ones not yet popped."""
        return int(self._nodes[0])

    @property
    def nbytes(self) -> int:
        """Memory held by the table and the first-seen heap, in bytes."""
        return int(self._table.nbytes + self._heap.nbytes)


def _table_loops() -> ModuleType:
    return loops("movingtarget.memory.stores._hashtable")


def _as_int64(keys: NDArray[np.uint64]) -> NDArray[np.int64]:
    """Digests as a contiguous int64 view (the compiled loops' key type)."""
    return np.ascontiguousarray(keys, dtype=np.uint64).view(np.int64)
