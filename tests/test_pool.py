"""Model pools: members that differ, the mean, one call per member, caching, diversity."""

from __future__ import annotations

import numpy as np
import pytest

from movingtarget import ConfigError
from movingtarget.datasets import load_dataset
from movingtarget.defenses import build_defense
from movingtarget.metrics import disagreement, pool_diversity
from movingtarget.metrics.diversity import transfer_matrix
from movingtarget.models import ModelPool, build_model, cache_path


class Counting:
    """A member that counts its calls and the rows it was asked about."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.n_classes = inner.n_classes
        self.calls: list[int] = []

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(len(x))
        return self.inner.predict_proba(x)


@pytest.fixture(scope="module")
def split():
    return load_dataset("digits").split(test_size=0.3, seed=0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def bootstrap_pool(split, cache):
    return build_model("pool", split, seed=0, cache_dir=cache)


def _pairwise_equal(p: np.ndarray) -> list[bool]:
    k = len(p)
    return [np.allclose(p[i], p[j]) for i in range(k) for j in range(i + 1, k)]


def test_bootstrap_members_differ_and_the_mean_is_served(bootstrap_pool, split) -> None:
    pool = bootstrap_pool
    assert isinstance(pool, ModelPool) and len(pool.members) == 5 and pool.n_classes == 10
    p = pool.member_proba(split.x_test)
    assert p.shape == (5, len(split.x_test), 10)
    assert not any(_pairwise_equal(p))  # every pair of members differs
    np.testing.assert_allclose(pool.predict_proba(split.x_test), p.mean(axis=0), rtol=0, atol=1e-12)
    # members differ in their decisions too, not only in probabilities
    assert disagreement(pool, split.x_test) > 0.01


def test_seed_variation_differs_for_random_training_and_not_for_lbfgs(split, cache) -> None:
    mlp = build_model("pool", split, member="mlp", variation="seed", members=3, cache_dir=cache)
    assert not any(_pairwise_equal(mlp.member_proba(split.x_test)))
    # L-BFGS from zero ignores the seed: the documented reason bootstrap is the default
    lr = build_model("pool", split, variation="seed", members=3, cache_dir=cache)
    assert disagreement(lr, split.x_test) == 0.0


def test_torch_members(split, cache) -> None:
    pool = build_model(
        "pool",
        split,
        member="torch-mlp",
        members=2,
        member_params={"epochs": 2},
        device="cpu",
        cache_dir=cache,
    )
    p = pool.member_proba(split.x_test[:50])
    assert p.shape == (2, 50, 10)
    assert not np.allclose(p[0], p[1])


def test_member_proba_calls_each_member_once_on_the_whole_batch(bootstrap_pool, split) -> None:
    counted = [Counting(m) for m in bootstrap_pool.members]
    pool = ModelPool(counted, member="logistic")
    pool.member_proba(split.x_test[:200])
    assert [c.calls for c in counted] == [[200]] * 5
    # a defense answering a batch (the decision, then a filter reading ctx.proba) as well
    for c in counted:
        c.calls.clear()
    d = build_defense("moving-target > threshold(min_confidence=0.5)", pool)
    d.answer(split.x_test[:64])
    assert [c.calls for c in counted] == [[64]] * 5


def test_the_pool_is_cached_with_its_parameters(split, cache, bootstrap_pool) -> None:
    assert cache_path("pool", split, seed=0, cache_dir=cache).exists()
    assert cache_path("pool", split, seed=0, cache_dir=cache) != cache_path(
        "pool", split, seed=0, cache_dir=cache, members=3
    )
    again = build_model("pool", split, seed=0, cache_dir=cache)
    np.testing.assert_array_equal(
        again.member_proba(split.x_test), bootstrap_pool.member_proba(split.x_test)
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"members": 0}, "members must be a positive integer"),
        ({"members": 2.5}, "members must be a positive integer"),
        ({"variation": "jitter"}, "variation must be one of bootstrap, seed"),
        ({"member": "pool"}, "member must name a registered model other than 'pool'"),
        ({"member": "logistik"}, "unknown model 'logistik'"),
        ({"member_params": {"depth": 3}}, r"model 'logistic': .*'depth'"),
    ],
)
def test_bad_pool_parameters(split, tmp_path, params, message) -> None:
    with pytest.raises(ConfigError, match=message):
        build_model("pool", split, cache_dir=tmp_path, **params)


def test_transfer_between_members(bootstrap_pool, split, cache) -> None:
    x, y = split.x_test[:200], split.y_test[:200]
    tm, crafted = transfer_matrix(bootstrap_pool, x, y, eps=0.1)
    assert tm.shape == (5, 5) and (crafted > 0).all()
    np.testing.assert_array_equal(np.diag(tm), 1.0)
    off = tm[~np.eye(5, dtype=bool)]
    assert ((off >= 0) & (off <= 1)).all()
    assert off.mean() < 1.0  # some examples crafted on one member do not fool another
    d = pool_diversity(bootstrap_pool, x, y, eps=0.1)
    assert d.transfer == pytest.approx(off.mean())
    # identical members (logistic, seed variation): everything transfers
    same = build_model("pool", split, variation="seed", members=2, cache_dir=cache)
    assert pool_diversity(same, x, y, eps=0.1).transfer == 1.0


def test_transfer_needs_gradients_and_diversity_needs_a_pool(split, cache) -> None:
    mlp = build_model("pool", split, member="mlp", variation="seed", members=3, cache_dir=cache)
    assert pool_diversity(mlp, split.x_test, attack=None).disagreement > 0
    with pytest.raises(ConfigError, match="needs gradients"):
        pool_diversity(mlp, split.x_test[:20], split.y_test[:20])
    logistic = build_model("logistic", split, cache_dir=cache)
    with pytest.raises(ConfigError, match="needs a pool model"):
        disagreement(logistic, split.x_test)
