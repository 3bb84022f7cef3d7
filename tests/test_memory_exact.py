"""Exact fingerprints and the in-process store."""

from __future__ import annotations

import pickle

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from movingtarget.memory import ExactFingerprint, InProcessStore, occurrences_before
from reference_store import ReferenceStore


def test_identical_bytes_match_and_small_changes_do_not() -> None:
    fp = ExactFingerprint(secret=b"k")
    rng = np.random.default_rng(0)
    x = rng.random((500, 64)).astype(np.float32)
    y = x.copy()
    y[np.arange(500), rng.integers(0, 64, 500)] += np.float32(1e-3)
    hx, hy = fp.fingerprint(x), fp.fingerprint(y)
    assert (hx == fp.fingerprint(x.copy())).all()
    assert not (hx == hy).any()
    assert len(np.unique(hx)) == 500


def test_batch_and_single_rows_agree() -> None:
    """200 rows of 384 chunks take the BLAS product, single rows the compiled loop."""
    fp = ExactFingerprint(secret=b"k")
    x = np.random.default_rng(1).random((200, 3, 8, 8)).astype(np.float32)
    batch = fp.fingerprint(x)
    singles = np.concatenate([fp.fingerprint(x[i : i + 1]) for i in range(200)])
    assert (batch == singles).all()


def test_digests_are_pinned() -> None:
    """Memories persisted in SQLite or Redis keep matching only while digests stay the
    same: the numpy code computed these values before the loops were compiled; a change
    here orphans every stored memory."""
    x = (np.arange(3 * 64, dtype=np.float32).reshape(3, 64) - 50) / 7
    digests = ExactFingerprint(secret=b"pinned").fingerprint(x).tolist()
    assert digests == [0xB44DAE3F1AC134B9, 0x89DDCD9BA5C2FB3B, 0xCD7BC35D68CA062B]


def test_secret_changes_every_digest() -> None:
    x = np.random.default_rng(2).random((100, 16)).astype(np.float32)
    a = ExactFingerprint(secret=b"one").fingerprint(x)
    b = ExactFingerprint(secret=b"two").fingerprint(x)
    assert not (a == b).any()


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float32, (2, 5), elements=st.floats(-1e6, 1e6, width=32, allow_nan=False)),
)
def test_match_iff_same_values(x: np.ndarray) -> None:
    fp = ExactFingerprint(secret=b"prop")
    h = fp.fingerprint(x)
    same = bool(np.array_equal(x[0], x[1]))  # -0.0 == 0.0, as for the defense
    assert bool(h[0] == h[1]) == same


def test_occurrences_before_counts_earlier_equal_keys() -> None:
    keys = np.array([3, 1, 3, 3, 2, 1], dtype=np.uint64)
    assert occurrences_before(keys).tolist() == [0, 0, 1, 2, 0, 1]


def test_in_process_store_prior_counts_small_and_large_batches() -> None:
    for n in (5, 5000):
        rng = np.random.default_rng(n)
        keys = rng.integers(0, n // 2 + 1, n).astype(np.uint64)
        store = InProcessStore()
        prior = store.observe(keys, np.arange(n))
        expected = []
        seen: dict[int, int] = {}
        for k in keys.tolist():
            expected.append(seen.get(k, 0))
            seen[k] = seen.get(k, 0) + 1
        assert prior.tolist() == expected
        assert store.lookup(keys).tolist() == [seen[k] for k in keys.tolist()]
        assert len(store) == len(seen)


def test_in_process_store_capacity_evicts_oldest_first_seen() -> None:
    store, ref = InProcessStore(capacity=1000), ReferenceStore(None, 1000)
    rng = np.random.default_rng(3)
    t = 0
    for size in (5, 700, 3, 900, 1, 2000, 17):
        keys = rng.integers(1, 3000, size)
        now = list(range(t, t + size))
        t += size
        got = store.observe(keys.astype(np.uint64), np.array(now))
        assert got.tolist() == ref.observe(keys.tolist(), now)
        assert len(store) == len(ref.entries) <= 1000


def test_in_process_store_grows_past_many_keys_and_keeps_counts() -> None:
    store = InProcessStore()
    keys = np.random.default_rng(4).integers(1, 2**63, 200_000, dtype=np.uint64)
    assert (store.observe(keys, np.arange(len(keys))) == 0).all()
    assert (store.observe(keys[::-1], np.arange(len(keys))) == 1).all()
    assert len(store) == len(keys)
    assert store.lookup(np.array([0, 7], dtype=np.uint64)).tolist() == [0, 0]


class Half:
    """A two-class model answering 0.7 for class 1 (module level, so it pickles)."""

    n_classes = 2

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.tile([0.3, 0.7], (len(x), 1))


def test_a_memorizing_defense_pickles_and_keeps_its_memory() -> None:
    """Exact fingerprints drop their per-thread scratch buffers when pickled, so a
    defense with exact memorization can be copied to another process or saved."""
    from movingtarget.defenses import build_defense

    x = np.random.default_rng(5).random((300, 64)).astype(np.float32)  # BLAS path
    d = build_defense("memorize-abstain", Half())
    d.answer(x)
    copy = pickle.loads(pickle.dumps(d))
    assert (copy.answer(x).labels == -1).all()  # every query remembered
    assert (copy.answer(x[:1] + 1).labels == 1).all()
