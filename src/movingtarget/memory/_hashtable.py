"""The in-process store's hash table loops, compiled with numba.

A table is an ``(slots, 3)`` int64 array, one row per slot: the key (its uint64 bits;
0 marks an empty slot), the count and the first-seen time. Slots are found by
Fibonacci hashing (the top bits of ``key * golden ratio``) and linear probing; the
store keeps the load at most 0.6, and deletes (:func:`evict`) by moving the entries
after each hole back along their probe path, so every probe ends.

Probing is a loop that follows each key until it finds its slot, one key after the
other in arrival order: numpy can only do it in rounds over the whole batch, whose
per-call costs made it several times slower for the batches a gateway sees (tens to
thousands of keys), and which needed a sort to count copies of a key in one batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from movingtarget._numba import compiled

GOLDEN = 0x9E3779B97F4A7C15
# 0 marks an empty slot, so a (2^-64-likely) zero digest is stored under this one
ZERO_STANDIN = 0xD1B54A32D192ED03
_GOLDEN = np.uint64(GOLDEN)
_STANDIN = np.array([ZERO_STANDIN], np.uint64).view(np.int64)[0]


@compiled("int64(int64[:, ::1], int64[::1], int64[::1], int64, int64, int64[::1])")
def observe(table: Any, keys: Any, now: Any, ttl: int, bits: int, prior: Any) -> int:
    """Record ``keys`` (int64 views of the digests) seen at times ``now``, in order;
    write each key's count before it to ``prior``. An entry whose first-seen time is
    ``ttl`` or more before ``now`` restarts (``ttl`` 0: never). Returns the number of
    slots newly taken."""
    mask = table.shape[0] - 1
    shift = np.uint64(64 - bits)
    taken = 0
    for j in range(keys.shape[0]):
        k = keys[j]
        if k == 0:
            k = _STANDIN
        t = now[j]
        i = np.int64((np.uint64(k) * _GOLDEN) >> shift)
        while True:
            held = table[i, 0]
            if held == k:
                count = table[i, 1]
                if ttl > 0 and table[i, 2] <= t - ttl:
                    count = 0
                break
            if held == 0:
                table[i, 0] = k
                taken += 1
                count = 0
                break
            i = (i + 1) & mask
        prior[j] = count
        table[i, 1] = count + 1
        if count == 0:
            table[i, 2] = t
    return taken


@compiled("void(int64[:, ::1], int64[::1], int64, int64[::1])")
def find(table: Any, keys: Any, bits: int, slots: Any) -> None:
    """Write each key's slot to ``slots``, or -1 where the key is not stored."""
    mask = table.shape[0] - 1
    shift = np.uint64(64 - bits)
    for j in range(keys.shape[0]):
        k = keys[j]
        if k == 0:
            k = _STANDIN
        i = np.int64((np.uint64(k) * _GOLDEN) >> shift)
        while table[i, 0] != k and table[i, 0] != 0:
            i = (i + 1) & mask
        slots[j] = i if table[i, 0] == k else -1


@compiled("void(int64[:, ::1], int64[:, ::1], int64)")
def place(table: Any, rows: Any, bits: int) -> None:
    """Write whole rows (distinct non-zero keys, with their count and time) into an
    empty ``table``: a rebuild. Rows given in their old slot order land almost in
    order in the new table, so the writes stream through memory."""
    mask = table.shape[0] - 1
    shift = np.uint64(64 - bits)
    for j in range(rows.shape[0]):
        i = np.int64((np.uint64(rows[j, 0]) * _GOLDEN) >> shift)
        while table[i, 0] != 0:
            i = (i + 1) & mask
        table[i, 0] = rows[j, 0]
        table[i, 1] = rows[j, 1]
        table[i, 2] = rows[j, 2]


@compiled("int64(int64[:, ::1], uint8[::1], int64)")
def evict(table: Any, drop: Any, bits: int) -> int:
    """Empty the slots marked in ``drop`` and move every entry that followed a hole
    back along its probe path, in place, so that every probe still ends at its key or
    at an empty slot (no tombstones, no new table). One pass over the table, starting
    after a slot that was empty before, so that no probe path wraps past the start.
    Returns the number of slots emptied."""
    slots = table.shape[0]
    mask = slots - 1
    shift = np.uint64(64 - bits)
    # a slot empty *before* the deletions: no probe path crosses it (the load is at
    # most 0.6, so one exists)
    start = 0
    while table[start, 0] != 0:
        start += 1
    emptied = 0
    for slot in range(slots):
        if drop[slot] and table[slot, 0] != 0:
            table[slot, 0] = 0
            table[slot, 1] = 0
            table[slot, 2] = 0
            emptied += 1
    for step in range(1, slots + 1):
        j = (start + step) & mask
        k = table[j, 0]
        if k == 0:
            continue
        i = np.int64((np.uint64(k) * _GOLDEN) >> shift)
        # the first empty slot on its path from home; j itself if none comes before
        while i != j and table[i, 0] != 0:
            i = (i + 1) & mask
        if i != j:
            table[i, 0] = k
            table[i, 1] = table[j, 1]
            table[i, 2] = table[j, 2]
            table[j, 0] = 0
            table[j, 1] = 0
            table[j, 2] = 0
    return emptied
