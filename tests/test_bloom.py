"""The Bloom store: no false negatives, the designed false-positive rate (within its
standard error), batch answers equal to one-key-at-a-time answers, TTL by generations,
and the near-repeat gate deciding the same with it as with the exact in-process store."""

from __future__ import annotations

import math

import numpy as np
import pytest

from movingtarget import ConfigError
from movingtarget.defenses import build_defense
from movingtarget.memory import BloomStore, Store, open_store
from movingtarget.memory.stores.bloom import blocked_false_positive, design


def _keys(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**64, n, dtype=np.uint64)


def test_is_a_store() -> None:
    assert isinstance(BloomStore(10), Store)
    assert isinstance(open_store("bloom://?capacity=1000&fp=0.001&ttl=10"), BloomStore)


def test_every_observed_key_is_found_in_large_and_small_batches() -> None:
    store = BloomStore(300_000, false_positive=1e-3)
    keys = _keys(300_000, 1)
    store.observe(keys[:200_000], np.zeros(200_000, np.int64))  # chunked vector path
    for i in range(200_000, 200_400, 8):  # small-batch plain-Python path
        store.observe(keys[i : i + 8], np.zeros(8, np.int64))
    seen = np.r_[keys[:200_000], keys[200_000:200_400]]
    assert store.lookup(seen).all()
    assert store.observe(seen[::97], np.zeros(len(seen[::97]), np.int64)).all()


def test_a_batch_answers_like_a_set_in_arrival_order() -> None:
    # repeats inside one batch (also across its 65,536-key chunks) and across batches
    rng = np.random.default_rng(2)
    pool = _keys(40_000, 3)
    stream = pool[rng.integers(0, len(pool), 150_000)]
    store = BloomStore(100_000)  # fp 1e-6 at capacity: a false positive here is ~0.04 likely
    seen: set[int] = set()
    expected = []
    for k in stream.tolist():
        expected.append(int(k in seen))
        seen.add(k)
    got = np.r_[
        store.observe(stream[:140_000], np.zeros(140_000, np.int64)),
        store.observe(stream[140_000:], np.zeros(10_000, np.int64)),
    ]
    assert got.tolist() == expected
    assert len(store) == len(seen)


def test_small_and_vectorized_paths_set_the_same_bits() -> None:
    keys = np.r_[_keys(500, 4), _keys(20, 4)]  # with repeats
    one_by_one, at_once = BloomStore(2000), BloomStore(2000)
    answers = [one_by_one.observe(keys[i : i + 1], np.zeros(1, np.int64))[0] for i in range(520)]
    assert at_once.observe(keys, np.zeros(520, np.int64)).tolist() == answers
    assert np.array_equal(one_by_one._filters[0], at_once._filters[0])
    assert len(one_by_one) == len(at_once) == 500
    probe = np.r_[keys[:40], _keys(40, 99)]
    vectorized = at_once.lookup(probe)
    small = np.concatenate([at_once.lookup(probe[i : i + 8]) for i in range(0, 80, 8)])
    assert vectorized.tolist() == small.tolist() == [1] * 40 + [0] * 40


def test_false_positive_rate_at_capacity_is_the_designed_rate() -> None:
    # a filter designed for 1 % at 100,000 keys, filled to exactly that
    store = BloomStore(100_000, false_positive=0.01)
    store.observe(_keys(100_000, 5), np.zeros(100_000, np.int64))
    fresh = _keys(200_000, 6)
    measured = store.lookup(fresh).mean()
    predicted = store.expected_false_positive()
    se = math.sqrt(predicted * (1 - predicted) / len(fresh))
    assert abs(measured - predicted) <= 3 * se
    # the fill-based prediction agrees with the size-based design (blocks rounded up)
    assert predicted == pytest.approx(store.design_false_positive, rel=0.05)
    assert store.design_false_positive <= 0.01
    assert not store.saturated


def test_design_meets_its_rate_with_few_bytes() -> None:
    for fp in (1e-2, 1e-4, 1e-6):
        k, bits = design(fp)
        assert blocked_false_positive(bits, k) <= fp
        assert blocked_false_positive(bits * 0.98, k) > fp  # the fewest bits, to 2 %
    k, bits = design(1e-6)
    assert 16 * bits / 8 < 200  # a query's 16 band keys fit the 200-byte budget


def test_overfilling_is_reported_and_raises_the_rate() -> None:
    store = BloomStore(1000, false_positive=0.01)
    store.observe(_keys(3000, 7), np.zeros(3000, np.int64))
    assert store.saturated
    assert store.expected_false_positive() > 0.05


def test_ttl_by_generations_keeps_a_key_between_half_and_all_of_the_ttl() -> None:
    store = BloomStore(1000, ttl=10)  # periods of 5
    key = np.array([42], np.uint64)
    assert store.observe(key, np.array([3]))[0] == 0  # period 0
    assert store.lookup(key)[0] == 1
    other = np.array([7], np.uint64)
    store.observe(other, np.array([8]))  # period 1: the key is in the previous generation
    assert store.lookup(key)[0] == 1
    store.observe(other, np.array([10]))  # period 2: the key's generation is dropped
    assert store.lookup(key)[0] == 0
    # a repeat refreshes: observed at 3 and 8, still found in period 2
    fresh = BloomStore(1000, ttl=10)
    fresh.observe(np.array([42, 42], np.uint64), np.array([3, 8]))
    fresh.observe(other, np.array([12]))
    assert fresh.lookup(key)[0] == 1
    # a gap of two periods or more forgets everything at once
    fresh.observe(other, np.array([40]))
    assert fresh.lookup(key)[0] == 0


def test_ttl_rotation_inside_one_large_batch_matches_one_key_at_a_time() -> None:
    keys = _keys(300, 8)[np.random.default_rng(9).integers(0, 300, 2000)]
    now = np.arange(2000, dtype=np.int64) // 4
    batch, single = BloomStore(5000, ttl=40), BloomStore(5000, ttl=40)
    expected = [single.observe(keys[i : i + 1], now[i : i + 1])[0] for i in range(2000)]
    assert batch.observe(keys, now).tolist() == expected


def test_clear_forgets() -> None:
    store = BloomStore(100)
    store.observe(np.array([1, 2], np.uint64), np.zeros(2, np.int64))
    store.clear()
    assert len(store) == 0 and store.lookup(np.array([1, 2], np.uint64)).tolist() == [0, 0]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: BloomStore(0), "capacity must be positive"),
        (lambda: BloomStore(1.5), "capacity must be an integer"),  # type: ignore[arg-type]
        (lambda: BloomStore(10, false_positive=0.7), "fp must be in"),
        (lambda: BloomStore(10, ttl=1), "ttl must be an integer >= 2"),
        (lambda: open_store("bloom://?fp=tiny"), "fp must be a number"),
        (lambda: open_store("bloom://?capacity=-3"), "capacity must be positive"),
        (lambda: open_store("bloom://?namespace=a"), "no namespaces"),
        (lambda: open_store("bloom://x"), "only ?options"),
        (lambda: open_store("bloom://?synchronous=full"), "unknown option 'synchronous'"),
        # 240 GB of filter: refused with the size named, not a MemoryError traceback
        (lambda: open_store("bloom://?capacity=50000000000"), "more than this machine can give"),
    ],
)
def test_bad_parameters_are_config_errors(make, words: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=words.replace("?", r"\?")):
        make()


def test_near_repeat_decides_the_same_with_a_bloom_store() -> None:
    class Constant:
        n_classes = 3

        def predict_proba(self, x: np.ndarray) -> np.ndarray:
            return np.tile([0.2, 0.5, 0.3], (len(x), 1))

    rng = np.random.default_rng(10)
    base = rng.random((200, 64), dtype=np.float32)
    # fresh queries, noisy repeats of them and exact repeats, interleaved
    stream = np.r_[base, np.clip(base + rng.uniform(-3, 3, base.shape) / 255, 0, 1), base[:50]]
    stream = stream[rng.permutation(len(stream))].astype(np.float32)
    answers = {}
    for url in ("memory://", "bloom://?capacity=100000"):
        defense = build_defense(f"near-repeat(store='{url}', secret=k) > argmax", Constant())
        batches = [stream[i : i + 25] for i in range(0, 450, 25)]
        answers[url] = [defense.answer(batch).reason_labels() for batch in batches]
    assert answers["memory://"] == answers["bloom://?capacity=100000"]
    assert sum(r == "near-repeat" for batch in answers["memory://"] for r in batch) >= 240
