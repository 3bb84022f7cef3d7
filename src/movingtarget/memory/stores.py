"""Stores: where the memory box keeps fingerprints (count and first-seen time).

One interface, several back ends. Stores keep keyed hashes, never raw inputs.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from movingtarget.errors import ConfigError

_SMALL_BATCH = 64  # batches up to this size take the plain loop
_MIN_SLOTS = 1024
_MAX_LOAD = 0.6
# tables up to this many slots (96 MB) grow fourfold: each stored key is then moved a
# third of a time on average instead of once; larger ones double, to bound the memory
_QUADRUPLE_BELOW = 1 << 22
_WINDOW = 8  # slots a key reads in its first windowed probing round
# large batches first probe each key's home slot alone: that settles most keys with
# cheap one-value operations; below this size numpy's per-call cost dominates and the
# windowed rounds alone are quicker
_SLOT_MIN_KEYS = 512
_STEPS = np.arange(1024)  # offsets of the widest window
_M64 = (1 << 64) - 1
_GOLDEN_INT = 0x9E3779B97F4A7C15
_GOLDEN = np.uint64(_GOLDEN_INT)
# 0 marks an empty slot, so a (2^-64-likely) zero digest is stored under this one
_ZERO_STANDIN_INT = 0xD1B54A32D192ED03
_ZERO_STANDIN = np.uint64(_ZERO_STANDIN_INT)


def _nonzero(keys: NDArray[np.uint64]) -> NDArray[np.uint64]:
    if (keys == 0).any():
        keys = np.where(keys == 0, _ZERO_STANDIN, keys)
    return keys


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
    """A numpy open-addressing hash table in this process: fastest, gone when it ends.

    Batch-first: all keys of a batch probe the table together (linear probing, load
    kept at most 0.6; copies of one key in a batch are grouped with one sort), so large
    batches cost well under a microsecond per key; a plain loop serves batches of up to
    64 keys, where numpy's fixed per-call cost would dominate. Tables up to 4M slots
    grow fourfold, larger ones double. Per key it keeps the count and the
    first-seen time, side by side in one 24-byte row per slot.

    Bounds (both optional, ``now`` units for ``ttl``):

    * ``ttl``: an entry expires ``ttl`` after its *first-seen* time; a later query
      with that key counts as new (count 0) and starts a fresh entry;
    * ``capacity``: when more than ``capacity`` distinct keys are stored, the entries
      with the oldest first-seen time are evicted until ``0.9 * capacity`` remain
      (done in one pass, so eviction costs O(1) amortized per key). The table is sized
      for the capacity at once, so the store does not stall a batch to grow; it then
      holds 40-80 bytes per key of capacity once keys have spread over it.

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
        self._clock = np.iinfo(np.int64).min
        # a bounded store is sized for its capacity at once, so it does not stall a batch
        # to grow (unless one batch overshoots the capacity by more than the load's
        # slack); the operating system maps the memory as keys land
        slots = _MIN_SLOTS if capacity is None else _slots_for(capacity)
        try:
            self._allocate(slots)
        except MemoryError:
            raise ConfigError(
                f"store capacity {capacity} needs a table of {24 * slots:,} bytes, more than "
                "this machine can allocate"
            ) from None

    def _allocate(self, slots: int) -> None:
        self._bits = int(slots).bit_length() - 1
        # one row per slot (key, count, first-seen): a key's count and time share its
        # cache line, so a random key costs one memory access instead of three
        self._table = np.zeros((slots, 3), dtype=np.int64)
        self._keys = self._table[:, 0].view(np.uint64)  # 0 marks an empty slot
        self._counts = self._table[:, 1]
        self._first = self._table[:, 2]
        self._used = 0

    # -- hashing and probing -------------------------------------------------------
    def _home(self, keys: NDArray[np.uint64]) -> NDArray[np.int64]:
        # Fibonacci hashing: the top bits of key * golden ratio spread any key set;
        # shifted in place and read as int64 (they fit), with no further copies
        home = keys * _GOLDEN
        home >>= np.uint64(64 - self._bits)
        return home.view(np.int64)

    def _probe(self, keys: NDArray[np.uint64], insert: bool) -> NDArray[np.int64]:
        """Slot of each (distinct, non-zero) key; -1 if absent and ``insert`` is False.

        A large batch first reads each key's home slot alone: with a few one-value
        operations that settles every key whose home is empty or holds it (most keys at
        the loads kept). The rest, and small batches, probe in rounds that read a window
        of slots per key (see :meth:`_probe_windows`). With ``insert``, absent keys
        claim the empty slot they find; keys that race for one slot are settled by
        writing them all and reading back who stayed, and the others walk on from
        there. With no deletions, a stored key always lies before the first empty slot
        on its path, so claiming is never a duplicate.
        """
        mask = len(self._keys) - 1
        table = self._keys
        pos = self._home(keys)
        if len(keys) < _SLOT_MIN_KEYS:
            return self._probe_windows(keys, pos, insert)
        seen = table[pos]
        empty = seen == 0
        if insert:
            if empty.any():
                table[pos[empty]] = keys[empty]
                seen = table[pos]  # a claim that lost a race reads another key
            # the rest, the losers of a race among them, walk on from the next slot
            rest = np.flatnonzero(seen != keys)
        else:
            rest = np.flatnonzero(~empty & (seen != keys))
            pos[empty] = -1
        if len(rest):
            pos[rest] = self._probe_windows(keys[rest], (pos[rest] + 1) & mask, insert)
        return pos

    def _probe_windows(
        self, k: NDArray[np.uint64], pos: NDArray[np.int64], insert: bool
    ) -> NDArray[np.int64]:
        """Slots of keys ``k`` probing from ``pos``, in rounds that read a window of
        slots per key and stop at the first slot holding the key or empty. The first
        window (8 slots, three cache lines of rows) settles most keys; it doubles
        every round, so the few keys in long runs of full slots take a round or two
        more, not one round per slot."""
        mask = len(self._keys) - 1
        table = self._keys
        out = np.empty(len(k), dtype=np.int64)
        active = np.arange(len(k))
        width = _WINDOW
        while len(active):
            seen = table[(pos[:, None] + _STEPS[:width]) & mask]
            is_key = seen == k[:, None]
            hit = is_key | (seen == 0)
            first = hit.argmax(axis=1)  # 0 where the window holds neither
            rows = np.arange(len(k))
            present = is_key[rows, first]
            empty = hit[rows, first] & ~present
            slot = (pos + first) & mask
            if insert:
                if empty.any():
                    table[slot[empty]] = k[empty]
                    present |= empty & (table[slot] == k)
                done = present
                # the losers of a race walk on from the slot they lost
                pos = np.where(empty, slot, pos + width) & mask
            else:
                done = present | empty
                slot[empty] = -1
                pos = (pos + width) & mask
            out[active[done]] = slot[done]
            keep = ~done
            active, k, pos = active[keep], k[keep], pos[keep]
            width = min(2 * width, len(_STEPS))
        return out

    def _rebuild(self, slots: int, keep: NDArray[np.int64]) -> None:
        entries = self._table[keep]
        keys = entries[:, 0].view(np.uint64)
        self._allocate(slots)
        # inserted in order of home slot, each key takes the slot after the previous
        # key's or its home if that is later: one pass, no probing (``keep`` in slot
        # order is nearly sorted by home already, which the stable sort is quick on)
        home = self._home(keys)
        order = np.argsort(home, kind="stable")
        rank = np.arange(len(keys))
        where = home[order]  # in place from here: fresh memory is slow to touch
        where -= rank
        np.maximum.accumulate(where, out=where)
        where += rank
        # ``where`` increases, so the keys that fit before the table's end are a prefix
        # and are written in slot order
        fit = int(np.searchsorted(where, slots))
        self._table[where[:fit]] = entries[order[:fit]]
        wrap = order[fit:]
        if len(wrap):  # a run past the table's end continues in the first empty slots
            self._table[np.flatnonzero(self._keys == 0)[: len(wrap)]] = entries[wrap]
        self._used = len(keys)

    def _live(self) -> NDArray[np.int64]:
        live = self._keys != 0
        if self.ttl is not None:
            live &= self._first > self._clock - self.ttl
        return np.flatnonzero(live)

    def _reserve(self, extra: int) -> None:
        slots = len(self._keys)
        if self._used + extra <= _MAX_LOAD * slots:
            return
        live = self._live()  # expired entries are dropped whenever the table is rebuilt
        while (len(live) + extra) > _MAX_LOAD * slots:
            slots = _grown(slots)
        self._rebuild(slots, live)

    def _evict(self) -> None:
        assert self.capacity is not None
        live = self._live()
        if len(live) <= self.capacity:
            return
        keep_n = max(1, int(0.9 * self.capacity))
        # the newest first-seen entries stay; ties broken by slot, deterministic
        order = np.argsort(-self._first[live], kind="stable")
        self._rebuild(len(self._keys), np.sort(live[order[:keep_n]]))

    # -- the Store interface -------------------------------------------------------
    def observe(self, keys: NDArray[np.uint64], now: NDArray[np.int64]) -> NDArray[np.int64]:
        keys = np.asarray(keys, dtype=np.uint64)
        if len(keys) == 0:
            return np.zeros(0, dtype=np.int64)
        now = np.asarray(now, dtype=np.int64)
        if len(keys) <= _SMALL_BATCH or self._expires_inside(keys, now):
            prior = self._observe_small(keys.tolist(), now.tolist())
        else:
            self._clock = max(self._clock, int(now.max()))
            prior = self._observe_batch(_nonzero(keys), now)
        if self.capacity is not None and self._used > self.capacity:
            self._evict()
        return prior

    def _expires_inside(self, keys: NDArray[np.uint64], now: NDArray[np.int64]) -> bool:
        """True when an entry could expire between two queries of this batch; the batch
        path treats later copies of a key as repeats, so such batches go query by query.
        (Conservative: any stored key whose expiry falls inside the batch's time span.)"""
        if self.ttl is None:
            return False
        lo, hi = int(now.min()) - self.ttl, int(now.max()) - self.ttl
        if hi - lo >= self.ttl:
            return True  # a key first seen in this batch may expire in it too
        slots = self._probe(_nonzero(np.unique(keys)), insert=False)
        first = self._first[slots[slots >= 0]]
        return bool(((first > lo) & (first <= hi)).any())

    def _observe_batch(self, keys: NDArray[np.uint64], now: NDArray[np.int64]) -> NDArray[np.int64]:
        # copies of one key probe to one slot; without copies no sort is needed
        self._reserve(len(keys))
        slots = self._probe(keys, insert=True)
        # read the counts, then scatter each row's index into its slot's count: a row
        # that does not read its own index back shares its slot with a copy of its key
        counts = self._counts
        stored = counts[slots]
        rows = np.arange(len(slots), dtype=np.int64)
        counts[slots] = rows
        if not np.array_equal(counts[slots], rows):
            counts[slots] = stored
            return self._observe_grouped(keys, now)
        fresh = stored == 0
        self._used += int(np.count_nonzero(fresh))
        if self.ttl is not None:
            expired = ~fresh & (self._first[slots] <= now - self.ttl)
            stored = np.where(expired, 0, stored)
            fresh |= expired
        counts[slots] = stored + 1
        self._first[slots[fresh]] = now[fresh]
        return stored

    def _observe_grouped(
        self, keys: NDArray[np.uint64], now: NDArray[np.int64]
    ) -> NDArray[np.int64]:
        order = np.argsort(keys, kind="stable")
        ranked = keys[order]
        starts = np.ones(len(keys), dtype=bool)
        starts[1:] = ranked[1:] != ranked[:-1]
        group = np.cumsum(starts) - 1
        start_at = np.flatnonzero(starts)
        uniq = ranked[start_at]
        first_row = order[start_at]  # stable sort: the group's earliest arrival
        batch_counts = np.diff(np.append(start_at, len(keys)))
        self._reserve(len(uniq))
        slots = self._probe(uniq, insert=True)
        stored = self._counts[slots]
        fresh = stored == 0
        self._used += int(np.count_nonzero(fresh))
        if self.ttl is not None:
            # an expired entry restarts: its count and first-seen belong to this batch
            expired = ~fresh & (self._first[slots] <= now[first_row] - self.ttl)
            stored = np.where(expired, 0, stored)
            fresh |= expired
        self._counts[slots] = stored + batch_counts
        self._first[slots[fresh]] = now[first_row[fresh]]
        # prior count = stored before the batch + earlier copies inside the batch
        rank = np.arange(len(keys)) - start_at[group]
        prior = np.empty(len(keys), dtype=np.int64)
        prior[order] = stored[group] + rank
        return prior

    def _observe_small(self, keys: list[int], now: list[int]) -> NDArray[np.int64]:
        # a plain loop over the same table beats numpy's per-call cost for a few keys
        ttl = self.ttl
        self._clock = max(self._clock, max(now))
        self._reserve(len(keys))  # the table stays put for the whole loop
        keys_at, count_at, first_at = self._keys.item, self._counts.item, self._first.item
        table, counts, first = self._keys, self._counts, self._first
        mask = len(table) - 1
        shift = 64 - self._bits
        prior = []
        fresh = 0
        for k, t in zip(keys, now, strict=True):
            k = k or _ZERO_STANDIN_INT
            i = ((k * _GOLDEN_INT) & _M64) >> shift
            while True:
                seen = keys_at(i)
                if seen == k:
                    c = count_at(i)
                    if ttl is not None and first_at(i) <= t - ttl:
                        c = 0
                    break
                if seen == 0:
                    table[i] = k
                    fresh += 1
                    c = 0
                    break
                i = (i + 1) & mask
            prior.append(c)
            counts[i] = c + 1
            if c == 0:
                first[i] = t
        self._used += fresh
        return np.array(prior, dtype=np.int64)

    def lookup(self, keys: NDArray[np.uint64]) -> NDArray[np.int64]:
        slots = self._probe(_nonzero(np.asarray(keys, dtype=np.uint64)), insert=False)
        found = slots >= 0
        out = np.zeros(len(slots), dtype=np.int64)
        out[found] = self._counts[slots[found]]
        if self.ttl is not None:
            out[found] *= self._first[slots[found]] > self._clock - self.ttl
        return out

    def first_seen(self, key: int) -> int | None:
        """Time the key was first observed (in its current entry), or None."""
        slot = int(self._probe(_nonzero(np.array([key], dtype=np.uint64)), insert=False)[0])
        if slot < 0 or (self.ttl is not None and self._first[slot] <= self._clock - self.ttl):
            return None
        return int(self._first[slot])

    def clear(self) -> None:
        self._allocate(_MIN_SLOTS if self.capacity is None else _slots_for(self.capacity))

    def __len__(self) -> int:
        return self._used if self.ttl is None else len(self._live())

    @property
    def nbytes(self) -> int:
        """Memory held by the table, in bytes."""
        return int(self._table.nbytes)
