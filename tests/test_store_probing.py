"""The in-process store's hash table: keys whose home slots collide form long runs of
full slots, wrap around the table's end and are copied within one batch, also while
the table grows; keys span all 64 bits (0 included); counts must stay exact, and the
table must agree with the reference semantics through growth, expiry and eviction."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from movingtarget.errors import ConfigError
from movingtarget.memory import InProcessStore
from reference_store import ReferenceStore

GOLDEN = 0x9E3779B97F4A7C15
SLOTS = 1024  # a fresh store's table


def keys_at_home(slot: int, n: int, salt: int, slots: int = SLOTS) -> list[int]:
    """``n`` distinct keys whose home slot (Fibonacci hashing) in a table of ``slots``
    is ``slot``."""
    inverse = pow(GOLDEN, -1, 1 << 64)
    shift = 64 - (slots.bit_length() - 1)
    return [(inverse * ((slot << shift) + salt + i)) % (1 << 64) for i in range(n)]


def test_long_runs_of_collisions_and_around_the_end_count_exactly() -> None:
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
    # in batches of a few keys, so the table grows between batches, not inside one
    for i in range(0, 600, 30):
        assert store.observe(run[i : i + 30], np.zeros(30, np.int64)).tolist() == [0] * 30
    assert store.observe(more, np.ones(100, np.int64)).tolist() == [0] * 100
    assert len(store._keys) == grown  # it grew
    assert store.lookup(run).tolist() == [1] * 600
    both = np.concatenate([more, run])
    assert store.observe(both, np.full(700, 2, np.int64)).tolist() == [1] * 700
    assert len(store) == 700


def test_large_batches_with_collisions_and_copies_count_exactly() -> None:
    """A batch that grows the table and holds runs of colliding keys, a run around the
    table's end and copies of earlier keys counts exactly, in lookups too."""
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


def test_a_bounded_store_grows_with_what_it_holds_up_to_its_capacity_table() -> None:
    """With a capacity, the table starts small and grows as keys land, never past the
    table the capacity needs (a power of two within the load limit): a store holding
    few keys holds little memory. Counts stay exact, and a capacity beyond the machine
    is a ConfigError naming the bytes, at construction."""
    store = InProcessStore(capacity=100_000)
    assert len(store._keys) == 1024
    store.observe(np.arange(1, 101, dtype=np.uint64), np.zeros(100, np.int64))
    assert store.nbytes == 1024 * 24 + 1024 * 16  # 100 keys: the smallest table and heap
    keys = np.random.default_rng(3).integers(1, 2**63, 150_000, dtype=np.uint64)
    for i in range(0, 150_000, 1_000):
        store.observe(keys[i : i + 1_000], np.full(1_000, i + 1, np.int64))
        assert len(store._keys) <= 262_144  # 100,000 / 0.6 rounded up to a power of two
    assert len(store._keys) == 262_144 and len(store) <= 100_000
    assert store.lookup(keys[-1_000:]).tolist() == [1] * 1_000
    store.clear()
    assert len(store._keys) == 1024 and len(store) == 0
    with pytest.raises(ConfigError, match="capacity 1000000000000 needs a table of"):
        InProcessStore(capacity=10**12)


def test_a_preallocated_store_takes_its_capacity_table_once_and_keeps_what_it_held() -> None:
    """``preallocate`` sizes the table for the capacity with the entries already held;
    filling it to capacity then never rebuilds it, and clearing keeps the full table."""
    store = InProcessStore(capacity=100_000)
    store.observe(np.array([5, 6], np.uint64), np.array([0, 1]))
    store.preallocate()
    table = store._table
    assert len(store._keys) == 262_144
    assert store.lookup(np.array([5, 6, 7], np.uint64)).tolist() == [1, 1, 0]
    keys = np.random.default_rng(4).integers(8, 2**63, 99_000, dtype=np.uint64)
    for i in range(0, 99_000, 1_000):
        assert store.observe(keys[i : i + 1_000], np.full(1_000, i + 2, np.int64)).max() == 0
    assert store._table is table and len(store) == 99_002
    store.clear()
    assert len(store._keys) == 262_144 and len(store) == 0
    with pytest.raises(ConfigError, match="preallocate needs a store with a capacity"):
        InProcessStore().preallocate()


# keys from a pool with 64-bit extremes, 0 and keys that collide at home in small tables
POOL = sorted(
    {0, 1, 2**63 - 1, 2**63, 2**64 - 1}
    | set(keys_at_home(0, 40, salt=0))
    | set(keys_at_home(SLOTS - 1, 40, salt=0))
    | set(range(3, 1500))
)


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.sampled_from(POOL), min_size=1, max_size=400), min_size=1, max_size=8
    ),
    ttl=st.one_of(st.none(), st.integers(1, 900)),
    capacity=st.one_of(st.none(), st.integers(1, 1200)),
    step=st.integers(0, 3),
)
def test_the_table_matches_the_reference_through_growth_expiry_and_eviction(
    batches: list[list[int]], ttl: int | None, capacity: int | None, step: int
) -> None:
    """Hundreds of distinct keys per batch grow a fresh 1,024-slot table (unbounded) or
    evict (bounded); with a TTL, entries expire between and within batches; with step
    0 a batch's queries share one time, so evictions break ties (by signed key). Every
    prior count, lookup and size must equal the one-query-at-a-time reference."""
    store, ref = InProcessStore(ttl=ttl, capacity=capacity), ReferenceStore(ttl, capacity)
    t = 0
    for batch in batches:
        now = [t + step * i for i in range(len(batch))]
        t += max(1, step * len(batch))
        got = store.observe(np.array(batch, dtype=np.uint64), np.array(now))
        assert got.tolist() == ref.observe(batch, now)
    assert store.lookup(np.array(POOL, dtype=np.uint64)).tolist() == [ref.count(k) for k in POOL]
    assert len(store) == len(ref.entries)


def test_a_rebuild_inside_a_batch_keeps_entries_still_live_for_its_earlier_queries() -> None:
    """A batch spanning times 5..904 grows the table; an entry first seen at 0 with a TTL
    of 10 has expired for the batch's later queries but not for its first, at time 5,
    which must still count it."""
    store = InProcessStore(ttl=10)
    assert store.observe(np.array([7], np.uint64), np.array([0])).tolist() == [0]
    batch = np.arange(7, 907, dtype=np.uint64)  # key 7 first, then 899 new keys
    prior = store.observe(batch, np.arange(5, 905))
    assert len(store._keys) > SLOTS  # it grew inside this batch
    assert prior.tolist() == [1] + [0] * 899


def test_a_store_pickles_with_its_counts() -> None:
    """Defenses holding a store can be sent to worker processes or saved."""
    store = InProcessStore(ttl=100)
    store.observe(np.array([3, 4, 3], np.uint64), np.arange(3))
    copy = pickle.loads(pickle.dumps(store))
    assert copy.observe(np.array([3, 5], np.uint64), np.array([3, 4])).tolist() == [2, 0]
    assert store.lookup(np.array([3, 5], np.uint64)).tolist() == [2, 0]  # the original


def test_a_full_store_evicts_per_batch_only_what_the_batch_adds() -> None:
    """Eviction is incremental: a store filled to its capacity that then receives k new
    keys removes exactly k entries, the k oldest, and keeps exactly ``capacity``; the
    table is never rebuilt, and the first-seen heap holds one node per entry, so no
    batch's eviction work grows with the table (counted, not timed). Under the old
    "down to 90 %" rule the first new key would have removed a tenth of the store."""
    capacity = 20_000
    store = InProcessStore(capacity=capacity)
    store.preallocate()
    table = store._table
    keys = np.random.default_rng(11).integers(1, 2**63, 3 * capacity, dtype=np.uint64)
    for i in range(0, capacity, 1_000):
        store.observe(keys[i : i + 1_000], np.arange(i, i + 1_000))
    assert len(store) == capacity and store.last_removed == 0
    t = capacity
    for k in (1, 64, 1, 1_000, 7):
        assert store.observe(keys[t : t + k], np.arange(t, t + k)).tolist() == [0] * k
        t += k
        assert store.last_removed == k and len(store) == capacity
        assert store.heap_nodes == capacity
        assert store.lookup(keys[t - capacity - k : t - capacity]).tolist() == [0] * k
        assert (store.lookup(keys[t - capacity : t]) == 1).all()
    store.observe(keys[:10], np.full(10, t))  # repeats of evicted keys: new again
    assert store.last_removed == 10 and len(store) == capacity
    assert store._table is table


def test_stale_heap_nodes_stay_bounded_under_ttl_restarts() -> None:
    """Entries that expire and restart inside a batch leave stale nodes in the heap;
    they are skipped when popped and dropped when they outnumber the live ones, so the
    heap stays within a bound of what the store holds while counts stay exact."""
    store, ref = InProcessStore(ttl=5, capacity=50), ReferenceStore(5, 50)
    rng = np.random.default_rng(12)
    t = 0
    for n in range(300):
        if n % 50 == 49:
            store._index()  # what a heap mostly of stale nodes gets: one node per entry
            assert store.heap_nodes == len(store)
        batch = rng.integers(1, 80, 200).tolist()
        now = [t + i // 20 for i in range(200)]  # spans 10 ticks: keys restart within it
        t += 10
        assert store.observe(np.array(batch, np.uint64), np.array(now)).tolist() == ref.observe(
            batch, now
        )
        assert len(store) == len(ref.entries) <= 50
        assert store.heap_nodes <= 2 * len(store) + 1024 + 200
    universe = np.arange(1, 80, dtype=np.uint64)
    assert store.lookup(universe).tolist() == [ref.count(int(k)) for k in universe]
