"""Noise-robust fingerprints: noisy repeats match, distinct benign items rarely do,
and the numpy and torch paths give the same digests."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from movingtarget import ConfigError
from movingtarget.datasets import load_digits
from movingtarget.errors import InputError
from movingtarget.memory.fingerprints.calibration import (
    TARGET_RATE,
    calibrate_robust,
    robust_stream_matches,
)
from movingtarget.memory.fingerprints.robust import RobustFingerprint
from movingtarget.memory.stores import InProcessStore

EPS = 4 / 255


def _noise(x: np.ndarray, eps: float, norm: str, rng: np.random.Generator) -> np.ndarray:
    if norm == "linf":
        delta = rng.uniform(-eps, eps, x.shape)
    else:
        delta = rng.standard_normal(x.shape)
        delta *= eps / np.linalg.norm(delta, axis=1, keepdims=True)
    return np.clip(x + delta, 0.0, 1.0).astype(np.float32)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    split = load_digits().split(test_size=0.5, seed=0)
    return split.x_train, split.x_test


@pytest.fixture(scope="module")
def calibrated(digits: tuple[np.ndarray, np.ndarray]):  # type: ignore[no-untyped-def]
    train, test = digits
    return calibrate_robust(train, test, secret=b"test")


def _at_least(hits: np.ndarray, bound: float) -> None:
    """The match rate is at least ``bound``, allowing three standard errors at ``bound``."""
    n = len(hits)
    se = math.sqrt(bound * (1 - bound) / n)
    assert hits.mean() >= bound - 3 * se, f"match rate {hits.mean():.4f} < {bound} - 3 SE"


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_noisy_repeats_match(digits, calibrated, norm: str) -> None:  # type: ignore[no-untyped-def]
    _, test = digits
    fp, _ = calibrated
    # the L2 noise of the same energy as uniform L-infinity noise: eps * sqrt(d / 3)
    eps = EPS if norm == "linf" else EPS * math.sqrt(test.shape[1] / 3)
    noisy = _noise(test, eps, norm, np.random.default_rng(1))
    shared = (fp.fingerprint(test) == fp.fingerprint(noisy)).sum(axis=1)
    _at_least(shared >= fp.threshold, 0.99)


def test_distinct_items_match_no_more_than_calibrated(digits, calibrated) -> None:  # type: ignore[no-untyped-def]
    _, test = digits
    fp, cal = calibrated
    assert cal.calibration_rate <= TARGET_RATE
    # held-out benign stream: the rate is within three standard errors of the target
    n = cal.n_heldout
    assert n == len(np.unique(test, axis=0))
    se = math.sqrt(TARGET_RATE * (1 - TARGET_RATE) / n)
    assert cal.heldout_rate <= TARGET_RATE + 3 * se
    # and the same through a real store, as the mechanism uses it
    store = InProcessStore()
    keys = fp.fingerprint(test)
    prior = store.observe(keys.reshape(-1), np.repeat(np.arange(len(test)), fp.bands))
    via_store = fp.matched(prior.reshape(keys.shape) > 0)
    assert (via_store == robust_stream_matches(fp, test)).all()


def test_exact_copies_always_match_and_noise_is_not_all_that_matters() -> None:
    fp = RobustFingerprint(secret=b"k")
    x = np.random.default_rng(3).random((200, 64), dtype=np.float32)
    assert (fp.fingerprint(x) == fp.fingerprint(x.copy())).all()
    # a large change (half the pixels flipped) is not a repeat
    far = x.copy()
    far[:, ::2] = 1.0 - far[:, ::2]
    assert not (fp.fingerprint(x) == fp.fingerprint(far)).any()


def test_threshold_counts_shared_bands() -> None:
    fp = RobustFingerprint(bands=4, rows=2, threshold=3, secret=b"k")
    seen = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=bool)
    assert fp.matched(seen).tolist() == [False, True, True]


@pytest.mark.parametrize(
    "shape,scale", [((64,), 1.0), ((1, 28, 28), 1.0), ((3, 32, 32), 1.0), ((57,), 5000.0)]
)
def test_numpy_and_torch_digests_are_equal(shape: tuple[int, ...], scale: float) -> None:
    torch = pytest.importorskip("torch")
    fp = RobustFingerprint(secret=b"k")
    x = (np.random.default_rng(4).random((300, *shape)) * scale).astype(np.float32)
    x[0] = 0.0
    x[1] = -x[1]  # negative values take the same floor division in both
    numpy_keys = fp.fingerprint(x)
    torch_keys = RobustFingerprint(secret=b"k", device="cpu").fingerprint(x)
    tensor_keys = fp.fingerprint(torch.from_numpy(x))
    assert numpy_keys.dtype == np.uint64
    assert (numpy_keys == torch_keys).all()
    assert (numpy_keys == tensor_keys).all()


def test_secret_and_size() -> None:
    x = np.random.default_rng(5).random((50, 64), dtype=np.float32)
    a = RobustFingerprint(secret=b"one").fingerprint(x)
    b = RobustFingerprint(secret=b"two").fingerprint(x)
    assert not (a == b).any()
    assert RobustFingerprint().bytes_per_query <= 200
    assert len(np.unique(a)) == a.size  # bands never share keys


@pytest.mark.parametrize(
    "params,field",
    [
        ({"bands": 0}, "bands"),
        ({"rows": 100}, "rows"),
        ({"width": 0.0}, "width"),
        ({"threshold": 20}, "threshold"),
        ({"resolution": 0.3}, "resolution"),
    ],
)
def test_bad_settings_name_the_field(params: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        RobustFingerprint(**params)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("large", [False, True])
def test_non_finite_values_are_input_errors(bad: float, large: bool) -> None:
    """Wherever the bad value sits, also after values too large for the float32 path."""
    x = np.random.default_rng(2).random((20, 64)).astype(np.float32)
    if large:
        x[3, 5] = 1e9
    x[17, 40] = bad
    with pytest.raises(InputError, match="NaN or infinite"):
        RobustFingerprint(secret=b"k").fingerprint(x)


def test_a_fingerprint_pickles_to_the_same_digests() -> None:
    fp = RobustFingerprint(secret=b"k")
    x = np.random.default_rng(1).random((5, 64)).astype(np.float32)
    assert (pickle.loads(pickle.dumps(fp)).fingerprint(x) == fp.fingerprint(x)).all()


def test_band_keys_are_pinned() -> None:
    """Persisted near-repeat memories match only while band keys stay the same: the
    numpy code computed these values before the loops were compiled; a change here
    orphans every stored memory."""
    x = (np.arange(3 * 64, dtype=np.float32).reshape(3, 64) - 50) / 7
    keys = RobustFingerprint(secret=b"pinned").fingerprint(x)[:, :2].ravel().tolist()
    assert keys == [
        0xAF10D64246F5D36C, 0x3FE45EA0C3706F66, 0xA50E873A11382DD3,
        0xBACEB2F3BCCABBCA, 0xCCB4A07AC09916CA, 0xD5FA85B5E76C774C,
    ]  # fmt: skip
