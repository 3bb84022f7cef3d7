"""The in-process store's probing: keys whose home slots collide form runs of full
slots longer than one probing window, wrap around the table's end, and race for the
same empty slots within one batch, also while the table grows; counts must still be
exact."""

from __future__ import annotations

import numpy as np
import pytest

from movingtarget.errors import ConfigError
from movingtarget.memory import InProcessStore

GOLDEN = 0x9E3779B97F4A7C15
SLOTS = 1024  # a fresh store's table


def keys_at_home(slot: int, n: int, salt: int, slots: int = SLOTS) -> list[int]:
    """``n`` distinct keys whose home slot (Fibonacci hashing) in a table of ``slots``
    is ``slot``."""
    inverse = pow(GOLDEN, -1, 1 << 64)
    shift = 64 - (slots.bit_length() - 1)
    return [(inverse * ((slot << shift) + salt + i)) % (1 << 64) for i in range(n)]


def test_collisions_longer_than_a_window_and_around_the_end_count_exactly() -> None:
    store = InProcessStore()
    assert len(store._keys) == SLOTS  # the crafted homes assume a fresh table
    # 40 keys share home slot 5 and 40 share the last slot, whose run wraps to slot 0
    # and then runs into the first group's
    first = keys_at_home(5, 40, salt=0)
    last = keys_at_home(SLOTS - 1, 40, salt=0)
    batch = np.array(last[:20] + first + last[20:], dtype=np.uint64)
    assert store.observe(batch, np.zeros(len(batch), np.int64)).tolist() == [0] * 80
    absent = np.array(keys_at_home(5, 3, salt=1000) + keys_at_home(SLOTS - 1, 3, 1000), np.uint64)
    assert store.lookup(absent).tolist() == [0] * 6
    again = np.concatenate([batch[::-1], absent])
    assert store.observe(again, np.ones(len(again), np.int64)).tolist() == [1] * 80 + [0] * 6
    assert store.lookup(batch).tolist() == [2] * 80
    assert len(store) == 86


def test_growing_keeps_a_run_that_wraps_around_the_end() -> None:
    store = InProcessStore()
    grown = 4 * SLOTS  # a small table grows fourfold
    # homed at the last slot of the grown table (and so of this one): when the table
    # grows, the run of 600 keys starts at its last slot and continues at its start
    run = np.array(keys_at_home(grown - 1, 600, salt=0, slots=grown), np.uint64)
    more = np.array(keys_at_home(0, 100, salt=0), np.uint64)  # where the run wraps to
    # in batches of a few keys: in one batch, keys of one home take one round each
    for i in range(0, 600, 30):
        assert store.observe(run[i : i + 30], np.zeros(30, np.int64)).tolist() == [0] * 30
    assert store.observe(more, np.ones(100, np.int64)).tolist() == [0] * 100
    assert len(store._keys) == grown  # it grew
    assert store.lookup(run).tolist() == [1] * 600
    both = np.concatenate([more, run])
    assert store.observe(both, np.full(700, 2, np.int64)).tolist() == [1] * 700
    assert len(store) == 700


def test_large_batches_probe_one_slot_first_and_count_exactly() -> None:
    """Batches of 512 keys or more first read each home slot alone (then windows): runs of
    colliding keys, a run around the table's end, copies of one key and keys racing
    for one empty slot must all count exactly, in lookups too."""
    store = InProcessStore()
    slots = 4 * SLOTS  # 1,500 keys grow a fresh table to this size before probing
    first = keys_at_home(7, 300, salt=0, slots=slots)
    last = keys_at_home(slots - 2, 300, salt=0, slots=slots)
    spread = [int(k) for k in np.random.default_rng(1).integers(1, 2**63, 600, dtype=np.uint64)]
    copies = first[:150] + spread[:150]  # copies of keys earlier in the batch
    batch = np.array(last[:150] + first + spread + last[150:] + copies, dtype=np.uint64)
    prior = store.observe(batch, np.zeros(len(batch), np.int64))
    assert len(store._keys) == slots
    assert prior.tolist() == [0] * 1200 + [1] * 300
    assert len(store) == 1200
    absent = np.array(keys_at_home(7, 300, salt=10_000, slots=slots), np.uint64)
    looked = store.lookup(np.concatenate([batch[::-1], absent]))
    expected = {k: 2 if k in copies else 1 for k in batch.tolist()}
    assert looked.tolist() == [expected[k] for k in batch[::-1].tolist()] + [0] * 300
    again = store.observe(batch, np.ones(len(batch), np.int64))
    seen: dict[int, int] = dict(expected)
    want = []
    for k in batch.tolist():
        want.append(seen[k])
        seen[k] += 1
    assert again.tolist() == want


def test_a_bounded_store_is_sized_for_its_capacity_and_does_not_grow() -> None:
    """With a capacity, the table is allocated for it at once (a power of two within the
    load limit), so filling the store to capacity never rebuilds it; counts stay exact,
    and a capacity beyond the machine is a ConfigError naming the bytes."""
    store = InProcessStore(capacity=100_000)
    assert len(store._keys) == 262_144  # 100,000 / 0.6 rounded up to a power of two
    keys = np.random.default_rng(3).integers(1, 2**63, 100_000, dtype=np.uint64)
    table = store._table
    for i in range(0, 100_000, 1_000):
        prior = store.observe(keys[i : i + 1_000], np.full(1_000, i, np.int64))
        assert prior.tolist() == [0] * 1_000
    assert store._table is table and len(store) == 100_000
    assert store.lookup(keys[::9]).tolist() == [1] * len(keys[::9])
    store.clear()
    assert len(store._keys) == 262_144 and len(store) == 0
    with pytest.raises(ConfigError, match="capacity 1000000000000 needs a table of"):
        InProcessStore(capacity=10**12)
