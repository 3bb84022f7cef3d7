"""Feature-space neighbour memory: noisy repeats fall within the calibrated radius,
distinct benign items rarely do, HNSW agrees with the exact index."""

from __future__ import annotations

import math

import numpy as np
import pytest

from movingtarget import ConfigError
from movingtarget.datasets import load_digits
from movingtarget.memory.fingerprints.calibration import TARGET_RATE, calibrate_radius
from movingtarget.memory.fingerprints.neighbours import (
    NeighbourIndex,
    NeighbourMemory,
    PCAEncoder,
    PenultimateEncoder,
    RandomProjectionEncoder,
)

EPS = 4 / 255


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    split = load_digits().split(test_size=0.5, seed=0)
    return split.x_train, split.x_test


@pytest.mark.parametrize("encoder", ["random", "pca"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_noisy_repeats_are_near_and_distinct_items_are_not(
    digits: tuple[np.ndarray, np.ndarray], encoder: str, norm: str
) -> None:
    train, test = digits
    enc = RandomProjectionEncoder(32, seed=0) if encoder == "random" else PCAEncoder(32).fit(train)
    cal = calibrate_radius(enc, train, test)
    se = math.sqrt(TARGET_RATE * (1 - TARGET_RATE) / cal.n_heldout)
    assert cal.calibration_rate <= TARGET_RATE
    assert cal.heldout_rate <= TARGET_RATE + 3 * se
    rng = np.random.default_rng(1)
    if norm == "linf":
        delta = rng.uniform(-EPS, EPS, test.shape)
    else:
        delta = rng.standard_normal(test.shape)
        delta *= EPS * math.sqrt(test.shape[1] / 3) / np.linalg.norm(delta, axis=1, keepdims=True)
    noisy = np.clip(test + delta, 0, 1).astype(np.float32)
    memory = NeighbourMemory(enc, radius=cal.value)
    memory.observe(test, np.arange(len(test)))
    hits = memory.observe(noisy, np.arange(len(test)))
    bound = 0.99
    assert hits.mean() >= bound - 3 * math.sqrt(bound * (1 - bound) / len(hits))


def test_a_query_matches_earlier_ones_in_its_own_batch_only() -> None:
    memory = NeighbourMemory(RandomProjectionEncoder(4), radius=0.05)
    x = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0.01], [1, 1, 1, 1.01]], np.float32)
    assert memory.observe(x, np.arange(4)).tolist() == [False, False, True, True]
    assert memory.observe(x[:1], np.array([4])).tolist() == [True]
    assert len(memory) == 5
    memory.clear()
    assert memory.observe(x[:1], np.array([5])).tolist() == [False]


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_recall_against_flat(kind: str) -> None:
    rng = np.random.default_rng(2)
    base = rng.standard_normal((5000, 32)).astype(np.float32)
    queries = base[:500] + rng.normal(0, 0.01, (500, 32)).astype(np.float32)
    flat, hnsw = NeighbourIndex(32, "flat"), NeighbourIndex(32, kind, nlist=32, nprobe=4)
    flat.add(base)
    for start in range(0, len(base), 1000):  # ivf trains once it holds 40 * nlist
        hnsw.add(base[start : start + 1000])
    _, exact = flat.search(queries)
    _, approx = hnsw.search(queries)
    recall = float((exact[:, 0] == approx[:, 0]).mean())
    bound = 0.95
    assert recall >= bound - 3 * math.sqrt(bound * (1 - bound) / 500)


def test_penultimate_encoder_reads_the_last_layer_input() -> None:
    torch = pytest.importorskip("torch")
    from movingtarget.models.torch import TorchModel

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    enc = PenultimateEncoder(TorchModel(net, 3, device="cpu", batch_size=7))
    x = np.random.default_rng(3).random((20, 8), dtype=np.float32)
    expected = torch.relu(net[0](torch.from_numpy(x))).detach().numpy()
    assert enc.dim == 5
    assert np.allclose(enc.encode(x), expected, atol=1e-6)


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ConfigError, match="radius"):
        NeighbourMemory(radius=-1.0)
    with pytest.raises(ConfigError, match="index"):
        NeighbourMemory(radius=1.0, index="lsh")
    with pytest.raises(ConfigError, match="nprobe"):
        NeighbourIndex(4, "ivf", nlist=4, nprobe=8)
    with pytest.raises(ConfigError, match="fit"):
        PCAEncoder(4).encode(np.zeros((1, 8), np.float32))
