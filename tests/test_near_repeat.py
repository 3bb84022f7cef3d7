"""The near-repeat mechanism: registered, composable, and it holds the noisy-repeat
adversary to r~ <= 2r on digits while benign near-duplicate traffic is rarely refused."""

from __future__ import annotations

import numpy as np
import pytest

from movingtarget import ConfigError
from movingtarget.answers import Reason
from movingtarget.arena.arena import Arena, ArenaConfig
from movingtarget.arena.transforms import NearDuplicates, rescale, shift
from movingtarget.attacks import NoisyRepeatAttack
from movingtarget.datasets import load_digits
from movingtarget.defenses import COMPOSITIONS, NearRepeat, build_defense
from movingtarget.defenses.near_repeat import calibrate_defense
from movingtarget.experiment import load_config
from movingtarget.experiment.runner import make_pools
from movingtarget.metrics.measured import attack_metrics, benign_false_abstention, natural_error
from movingtarget.models import build_model


class Constant:
    n_classes = 3

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.tile([0.2, 0.5, 0.3], (len(x), 1))


@pytest.fixture(scope="module")
def digits_setup():  # type: ignore[no-untyped-def]
    split = load_digits().split(test_size=0.5, seed=0)
    model = build_model("logistic", split, seed=0, cache_dir=None)
    pools = make_pools(split.x_test, split.y_test, "split", 0)
    r = natural_error(model.predict_proba(split.x_test), split.y_test)
    return split, model, pools, r


@pytest.mark.parametrize("fingerprint", ["robust", "neighbours"])
def test_noisy_repeat_attack_is_held_to_twice_r(digits_setup, fingerprint: str) -> None:  # type: ignore[no-untyped-def]
    split, model, pools, r = digits_setup
    spec = (
        "memorize(on_repeat=abstain) > "
        f"near-repeat(on_repeat=abstain, fingerprint={fingerprint}) > argmax"
    )
    defense = build_defense(spec, model, seed=0)
    (cal,) = calibrate_defense(defense, split.x_train, pools.benign_x, seed=0)
    assert cal.calibration_rate <= cal.target_rate
    adversary = NoisyRepeatAttack(
        pools.attacker_x, pools.attacker_y, 10, seed=0, eps=4 / 255, norm="linf"
    )
    config = ArenaConfig(
        queries=2000, benign_ratio=0.2, duplicate_share=0.05, near_duplicate_share=0.1
    )
    log = Arena(config).run(defense, [adversary], pools.benign_x, pools.benign_y, seed=0)
    metrics = attack_metrics(log, 0)
    assert metrics.r_tilde <= 2 * r
    assert benign_false_abstention(log) <= 0.005
    # the benign stream really holds near-duplicates, and memorization refuses most of them
    benign = log.adversary < 0
    assert log.noisy[benign].sum() >= 20
    assert (log.answer[benign][log.noisy[benign] == 1] == -1).mean() >= 0.5


def test_registered_and_composable() -> None:
    assert "near-repeat-abstain" in COMPOSITIONS
    defense = build_defense("near-repeat-abstain", Constant())
    assert defense.describe() == (
        "memorize(on_repeat=abstain) > near-repeat(on_repeat=abstain, fingerprint=robust) > argmax"
    )
    x = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    noisy = np.clip(x[:1] + np.float32(3 / 255), 0, 1)
    answers = defense.answer(np.concatenate([x, x[:1], noisy]))
    assert answers.labels.tolist() == [1, 1, 1, -1, -1]
    assert answers.reasons[3] == Reason.REPEAT  # exact repeats stay with memorize
    assert answers.reasons[4] == Reason.NEAR_REPEAT


def test_random_answers_and_store_url() -> None:
    gate = NearRepeat(on_repeat="random", store="memory://", secret=b"s")
    defense = build_defense("argmax", Constant())
    defense.mechanisms.insert(0, gate)
    x = np.random.default_rng(1).random((1, 64), dtype=np.float32)
    answers = defense.answer(np.repeat(x, 50, axis=0))
    assert (answers.reasons[1:] == Reason.NEAR_REPEAT_RANDOM).all()
    assert len(set(answers.labels[1:].tolist())) == 3  # uniformly random classes
    defense.reset()
    assert defense.answer(x).reasons.tolist() == [Reason.MODEL]


def test_neighbours_need_a_radius_or_calibration() -> None:
    defense = build_defense("near-repeat(fingerprint=neighbours) > argmax", Constant())
    with pytest.raises(ConfigError, match="radius"):
        defense.answer(np.zeros((1, 4), np.float32))
    ok = build_defense("near-repeat(fingerprint=neighbours, radius=0.1) > argmax", Constant())
    assert ok.answer(np.zeros((2, 4), np.float32)).labels.tolist() == [1, -1]


@pytest.mark.parametrize(
    "text,field",
    [
        ("near-repeat(on_repeat=maybe) > argmax", "on_repeat"),
        ("near-repeat(fingerprint=bloom) > argmax", "fingerprint"),
        ("near-repeat(fingerprint=robust, rows=0) > argmax", "rows"),
        ("near-repeat(fingerprint=neighbours, store='memory://') > argmax", "store"),
    ],
)
def test_bad_parameters_name_the_field(text: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        build_defense(text, Constant())


def test_near_duplicate_benign_traffic() -> None:
    x = np.random.default_rng(2).random((30, 64)).astype(np.float32)
    y = np.zeros(30, np.int64)
    config = ArenaConfig(
        queries=200, benign_ratio=1.0, near_duplicate_share=0.3, benign_repeats=True
    )
    attack = NoisyRepeatAttack(x, y, 3, seed=0)
    log = Arena(config).run(build_defense("deterministic", Constant()), [attack], x, y, seed=0)
    benign = log.adversary < 0
    near = log.noisy[benign] == 1
    assert near.sum() > 20
    # near-duplicates repeat an earlier benign item
    first = {int(s): i for i, s in reversed(list(enumerate(log.source[benign])))}
    pairs = zip(np.flatnonzero(near), log.source[benign][near], strict=True)
    assert all(first[int(s)] < i for i, s in pairs)
    with pytest.raises(ConfigError, match="near_duplicate_transforms"):
        ArenaConfig(near_duplicate_transforms=("blur",))


def test_transforms_keep_shape_and_range() -> None:
    x = np.random.default_rng(3).random((40, 64)).astype(np.float32)
    names = ["requantize", "levels", "shift", "brightness", "rescale"]
    out = NearDuplicates(names, lo=0, hi=1).apply(x, np.random.default_rng(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not np.array_equal(out, x)
    # rescale: one factor per item within 5 %, whatever the features' scale (Spambase)
    wide = x * np.array([1.0] * 63 + [15841.0], np.float32)
    moved = rescale(wide, np.random.default_rng(1), 0.0, float(wide.max()) * 2)
    factor = moved / wide
    assert np.allclose(factor, factor[:, :1], rtol=1e-5)
    assert (np.abs(factor - 1) <= 0.05 + 1e-6).all() and not np.allclose(factor, 1)
    img = np.arange(9, dtype=np.float32).reshape(1, 9)
    moved = shift(img, np.random.default_rng(0), 0, 8).reshape(3, 3)
    assert sorted(moved.reshape(-1).tolist()) != list(range(9))  # one row or column repeated


def test_arms_race_config_grid() -> None:
    cfg = load_config("arms-race")
    labels = [a.display for a in cfg.attacks]
    assert len(labels) == len(set(labels)) >= 12
    assert cfg.arena.near_duplicate_share > 0
    eps = sorted(a.params["eps"] for a in cfg.attacks if a.params.get("norm") == "linf")
    assert np.allclose(np.array(eps) * 255, [1, 2, 4, 8, 16, 32], atol=1e-3)
    with pytest.raises(ConfigError, match="grid"):
        from movingtarget.experiment import parse_config

        parse_config({"defenses": ["deterministic"], "attacks": [{"name": "x", "grid": {}}]})


def test_band_keys_live_in_a_persistent_store(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'near.db'}"
    x = np.random.default_rng(4).random((3, 64), dtype=np.float32)
    first = build_defense(f"near-repeat(store={url}, secret=k) > argmax", Constant())
    assert first.answer(x).reason_labels() == ["model"] * 3
    # a second defense on the same file (a restarted process) catches noisy repeats
    again = build_defense(f"near-repeat(store={url}, secret=k) > argmax", Constant())
    noisy = np.clip(x + np.float32(2 / 255), 0, 1)
    assert again.answer(noisy).reason_labels() == ["near-repeat"] * 3


def test_describe_names_the_settings_that_differ_from_the_defaults() -> None:
    narrow = NearRepeat(width=0.03, calibrate_width=False)
    wide = NearRepeat(width=0.4, calibrate_width=False)
    assert narrow.describe() == (
        "near-repeat(on_repeat=abstain, fingerprint=robust, width=0.03, calibrate_width=False)"
    )
    assert narrow.describe() != wide.describe()
    scaled = NearRepeat(fingerprint="neighbours", radius_scale=2.0)
    assert (
        scaled.describe()
        == "near-repeat(on_repeat=abstain, fingerprint=neighbours, radius_scale=2)"
    )
    # a store given by URL is named (redacted, as memorize names its store)
    text = NearRepeat(store="memory://").describe()
    assert text.endswith("store=memory://)")
