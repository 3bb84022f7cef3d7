"""The in-process store's hash table loops, compiled with numba.

A table is an ``(slots, 3)`` int64 array, one row per slot: the key (its uint64 bits;
0 marks an empty slot), the count and the first-seen time. Slots are found by
Fibonacci hashing (the top bits of ``key * golden ratio``) and linear probing; the
store keeps the load at most 0.6, and deletes one slot at a time (:func:`shed`) by
moving the entries after the hole back along their probe path (no tombstones), so every
probe ends.

Next to the table, an ``(n, 2)`` int64 array is a binary min-heap of ``(first_seen,
key)`` nodes (a 4-ary one measured slower at 1.6M nodes), ordered by time, then by the
key as a signed int64 (0 itself, not its stand-in): one node is pushed whenever an
entry takes a new first-seen time (a new key, or a restart after its TTL), so the
oldest entry is found without a scan. Nodes are never updated in place: one whose key
is gone, or whose key's entry has since taken another first-seen time, is stale and
skipped when popped.

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


@compiled("int64(int64[:, ::1], int64, int64)")
def slot_of(table: Any, k: int, bits: int) -> Any:
    """The slot holding key ``k`` (an int64 view of a digest), or -1."""
    mask = table.shape[0] - 1
    if k == 0:
        k = _STANDIN
    i = np.int64((np.uint64(k) * _GOLDEN) >> np.uint64(64 - bits))
    while table[i, 0] != k and table[i, 0] != 0:
        i = (i + 1) & mask
    return i if table[i, 0] == k else -1


@compiled("boolean(int64[:, ::1], int64, int64)")
def _before(heap: Any, a: int, b: int) -> bool:
    """Whether node ``a`` is older than node ``b``: by time, ties by signed key."""
    return heap[a, 0] < heap[b, 0] or (heap[a, 0] == heap[b, 0] and heap[a, 1] < heap[b, 1])


@compiled("void(int64[:, ::1], int64, int64, int64)")
def push(heap: Any, n: int, first: int, key: int) -> None:
    """Add node ``(first, key)`` to the heap of ``n`` nodes (room for it is the caller's)."""
    heap[n, 0] = first
    heap[n, 1] = key
    i = n
    while i > 0:
        up = (i - 1) >> 1
        if not _before(heap, i, up):
            break
        for c in range(2):
            held = heap[up, c]
            heap[up, c] = heap[i, c]
            heap[i, c] = held
        i = up


@compiled("void(int64[:, ::1], int64)")
def pop(heap: Any, n: int) -> None:
    """Remove the root of the heap of ``n > 0`` nodes (the last node takes its place)."""
    last = n - 1
    heap[0, 0] = heap[last, 0]
    heap[0, 1] = heap[last, 1]
    i = 0
    while True:
        low = i
        for child in (2 * i + 1, 2 * i + 2):
            if child < last and _before(heap, child, low):
                low = child
        if low == i:
            return
        for c in range(2):
            held = heap[low, c]
            heap[low, c] = heap[i, c]
            heap[i, c] = held
        i = low


@compiled("void(int64[:, ::1], int64, int64)")
def delete(table: Any, slot: int, bits: int) -> None:
    """Empty ``slot`` and move back, along their probe paths, the entries after it that
    could no longer be reached across the hole (backward-shift deletion): every probe
    still ends at its key or at an empty slot."""
    mask = table.shape[0] - 1
    shift = np.uint64(64 - bits)
    hole = slot
    j = slot
    while True:
        j = (j + 1) & mask
        k = table[j, 0]
        if k == 0:
            break
        home = np.int64((np.uint64(k) * _GOLDEN) >> shift)
        # the entry at j stays unless the hole lies on its path, from home up to j
        if (j - home) & mask >= (j - hole) & mask:
            table[hole, 0] = k
            table[hole, 1] = table[j, 1]
            table[hole, 2] = table[j, 2]
            hole = j
    table[hole, 0] = 0
    table[hole, 1] = 0
    table[hole, 2] = 0


@compiled(
    "int64(int64[:, ::1], int64[::1], int64[::1], int64, int64, int64[::1],"
    " int64[:, ::1], int64[::1])"
)
def observe(
    table: Any, keys: Any, now: Any, ttl: int, bits: int, prior: Any, heap: Any, nodes: Any
) -> int:
    """Record ``keys`` (int64 views of the digests) seen at times ``now``, in order;
    write each key's count before it to ``prior``. An entry whose first-seen time is
    ``ttl`` or more before ``now`` restarts (``ttl`` 0: never). Each entry that takes a
    first-seen time gets a node in ``heap``, whose size ``nodes[0]`` grows (the heap
    has room for one node per key; a heap of no rows: none kept). Returns the number of
    slots newly taken."""
    mask = table.shape[0] - 1
    shift = np.uint64(64 - bits)
    taken = 0
    n = nodes[0]
    track = heap.shape[0] > 0
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
            if track:
                push(heap, n, t, keys[j])
                n += 1
    nodes[0] = n
    return taken


@compiled("void(int64[:, ::1], int64[::1], int64, int64[::1])")
def find(table: Any, keys: Any, bits: int, slots: Any) -> None:
    """Write each key's slot to ``slots``, or -1 where the key is not stored."""
    for j in range(keys.shape[0]):
        slots[j] = slot_of(table, keys[j], bits)


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


@compiled("int64(int64[:, ::1], int64[:, ::1], int64[::1], int64, int64, int64, int64, int64)")
def shed(
    table: Any, heap: Any, nodes: Any, bits: int, ttl: int, clock: int, keep: int, used: int
) -> int:
    """Pop the oldest nodes off the heap and delete their entries (one slot each, see
    :func:`delete`): every entry expired at ``clock`` (``ttl`` 0: none expire), then the
    oldest live ones until at most ``keep`` of the ``used`` entries remain (``keep`` -1:
    no bound). Stale nodes are dropped on the way. Touches only the entries it deletes
    and the nodes it pops. Returns the number of entries deleted."""
    n = nodes[0]
    deleted = 0
    while n > 0:
        t = heap[0, 0]
        expired = ttl > 0 and t <= clock - ttl
        if not expired and (keep < 0 or used - deleted <= keep):
            break
        k = heap[0, 1]
        pop(heap, n)
        n -= 1
        slot = slot_of(table, k, bits)
        if slot >= 0 and table[slot, 2] == t:  # else stale: gone, or restarted since
            delete(table, slot, bits)
            deleted += 1
    nodes[0] = n
    return deleted
