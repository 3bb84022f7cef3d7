"""The arena: timelines, threat-model knobs, event logs (determinism, round trip)."""

from __future__ import annotations

import numpy as np
import pytest

from movingtarget import ABSTAIN, ConfigError, DataError
from movingtarget.arena import ADVERSARY_CLIENT, Arena, ArenaConfig, BenignTraffic, EventLog
from movingtarget.attacks import (
    NoisyRepeatAttack,
    RateTrackingAttack,
    TargetedTestSetAttack,
    TestSetAttack,
    build_adversary,
)
from movingtarget.datasets import load_dataset
from movingtarget.defenses import build_defense
from movingtarget.models import build_model


class _Constant:
    """A model that answers class 1 with confidence 0.7 for every input."""

    n_classes = 2

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.tile([0.3, 0.7], (len(x), 1))


@pytest.fixture(scope="module")
def digits():
    split = load_dataset("digits").split(test_size=0.3, seed=0)
    model = build_model("logistic", split, seed=0)
    return model, split


def deploy(
    model,
    split,
    defense: str,
    attack: str,
    seed: int = 0,
    config: ArenaConfig | None = None,
    **params,
):
    d = build_defense(defense, model, seed=seed)
    a = build_adversary(attack, split.x_test, split.y_test, d.n_classes, seed=seed, **params)
    cfg = config or ArenaConfig(queries=2000, benign_ratio=0.25, duplicate_share=0.1)
    return Arena(cfg).run(d, [a], split.x_test, split.y_test, seed=seed)


def test_budget_benign_share_and_clients(digits) -> None:
    model, split = digits
    log = deploy(model, split, "deterministic", "test-set")
    adv = log.adversarial
    assert adv.sum() == 2000
    assert (~adv).sum() == 500
    assert (log.client[adv] == ADVERSARY_CLIENT).all()
    assert ((log.client[~adv] >= 1) & (log.client[~adv] <= 100)).all()
    assert (log.t == np.arange(len(log))).all()


def test_benign_traffic_has_legitimate_duplicates(digits) -> None:
    model, split = digits
    cfg = ArenaConfig(queries=4000, benign_ratio=0.1, duplicate_share=0.2)
    log = deploy(model, split, "memorize-abstain", "test-set", config=cfg)
    benign = log.select(~log.adversarial)
    # 400 benign queries from a 540-item pool: repeats are only the injected duplicates
    _, counts = np.unique(benign.source, return_counts=True)
    dup = (counts - 1).sum() / len(benign)
    se = np.sqrt(0.2 * 0.8 / len(benign))
    assert abs(dup - 0.2) <= 3 * se + 0.01  # 0.01: a duplicate may hit an earlier duplicate
    # exact memorization refuses those legitimate duplicates: the cost it pays
    assert (benign.answer == ABSTAIN).mean() > 0.1


def _small_pool(n: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(3).random((n, 4)).astype(np.float32)
    return x, np.arange(n, dtype=np.int64) % 2


def test_benign_stream_larger_than_its_pool_is_refused() -> None:
    x, y = _small_pool(270)
    attacker = TestSetAttack(x, y, 2, seed=0)
    arena = Arena(ArenaConfig(queries=10_000, benign_ratio=0.04))
    with pytest.raises(ConfigError) as err:
        arena.run(build_defense("memorize-abstain", _Constant()), [attacker], x, y)
    text = str(err.value)
    for part in ("400 benign queries", "queries 10000 x benign_ratio 0.04", "holds 270 items"):
        assert part in text, text
    assert "arena.benign_repeats = true" in text
    # two adversaries: twice the benign traffic, said so
    with pytest.raises(ConfigError, match=r"800 benign queries \(2 adversaries x queries 10000"):
        ArenaConfig(queries=10_000, benign_ratio=0.04).check_benign_pool(500, adversaries=2)
    ArenaConfig(queries=10_000, benign_ratio=0.04).check_benign_pool(400)  # exactly fits


def test_benign_repeats_allows_cycling_through_the_pool() -> None:
    x, y = _small_pool(30)
    cfg = ArenaConfig(queries=200, benign_ratio=1.0, duplicate_share=0.0, benign_repeats=True)
    log = Arena(cfg).run(
        build_defense("deterministic", _Constant()), [TestSetAttack(x, y, 2, seed=0)], x, y
    )
    benign = log.source[log.adversary < 0]
    assert len(benign) == 200
    # no duplicates configured: every pass sends each item once, so 200 queries are
    # six full passes and a part of the seventh
    _, counts = np.unique(benign, return_counts=True)
    assert len(counts) == 30 and counts.min() >= 6 and counts.max() <= 7


def test_duplicates_do_not_use_up_fresh_pool_items() -> None:
    x, y = _small_pool(100)
    cfg = ArenaConfig(duplicate_share=0.3, near_duplicate_share=0.1, benign_repeats=True)
    traffic = BenignTraffic(x, y, cfg, np.random.default_rng(0))
    fresh: list[int] = []
    repeats = 0
    for n in [1] * 80 + [5] * 10:  # single queries and small batches: 130 in all
        idx = traffic.draw(n)
        is_fresh = ~(traffic.duplicate | traffic.near)
        fresh += idx[is_fresh].tolist()
        repeats += int((~is_fresh).sum())
    # 130 queries, about 40 % of them duplicates: fewer fresh rows than pool items, so no
    # fresh row may re-send an item (the pool must not wrap early)
    assert len(fresh) <= 100 and repeats > 20
    assert len(set(fresh)) == len(fresh)


def test_same_seed_same_bytes_different_seed_differs(digits, tmp_path) -> None:
    model, split = digits
    for defense in ("stochastic", "memorize-random"):
        a = deploy(model, split, defense, "noisy-repeat", seed=4)
        b = deploy(model, split, defense, "noisy-repeat", seed=4)
        c = deploy(model, split, defense, "noisy-repeat", seed=5)
        a.write(tmp_path / "a.csv")
        b.write(tmp_path / "b.csv")
        c.write(tmp_path / "c.csv")
        assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
        assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()


def test_event_log_round_trip(digits, tmp_path) -> None:
    model, split = digits
    log = deploy(model, split, "memorize-random", "test-set-targeted", target=2)
    log.write(tmp_path / "log.csv")
    back = EventLog.read(tmp_path / "log.csv")
    for col in (
        "t",
        "round",
        "client",
        "adversary",
        "source",
        "noisy",
        "y_true",
        "target",
        "answer",
        "reason",
    ):
        assert np.array_equal(getattr(back, col), getattr(log, col)), col
    assert back.adversaries == ["test-set-targeted"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "header must be"),
        ("a,b\n1,2\n", "header must be"),
        (
            "t,round,client,adversary,source,noisy,y_true,target,answer,reason\n1,2\n",
            "line 2 has the wrong number of fields",
        ),
        (
            "t,round,client,adversary,source,noisy,y_true,target,answer,reason\n"
            "x,0,1,,0,0,0,-1,0,model\n",
            "bad value",
        ),
        (
            "t,round,client,adversary,source,noisy,y_true,target,answer,reason\n"
            "0,0,1,,0,0,0,-1,0,confused\n",
            "bad value",
        ),
    ],
)
def test_bad_event_logs_are_refused(tmp_path, text: str, message: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(DataError) as err:
        EventLog.read(p)
    assert message in str(err.value)


def test_missing_event_log(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        EventLog.read(tmp_path / "none.csv")


def test_adversary_batch_forces_batches_answered_together(digits) -> None:
    model, split = digits
    log = deploy(
        model,
        split,
        "memorize-abstain",
        "test-set",
        config=ArenaConfig(queries=1000, benign_ratio=0, adversary_batch=50),
    )
    _, sizes = np.unique(log.round, return_counts=True)
    assert (sizes == 50).all()


def test_lifetime_resets_dynamic_state(digits) -> None:
    model, split = digits
    # once the pool is exhausted every query is a repeat; a new deployment forgets them
    short = deploy(
        model,
        split,
        "memorize-abstain",
        "test-set",
        config=ArenaConfig(queries=5000, benign_ratio=0, lifetime=1000),
    )
    forever = deploy(
        model,
        split,
        "memorize-abstain",
        "test-set",
        config=ArenaConfig(queries=5000, benign_ratio=0),
    )
    assert (short.answer == ABSTAIN).mean() < (forever.answer == ABSTAIN).mean()
    # within the first lifetime both deployments answer identically
    assert np.array_equal(short.answer[:1000], forever.answer[:1000])


def test_two_adversaries_share_one_timeline(digits) -> None:
    model, split = digits
    d = build_defense("memorize-abstain", model, seed=0)
    advs = [
        TestSetAttack(split.x_test, split.y_test, 10, seed=1),
        NoisyRepeatAttack(split.x_test, split.y_test, 10, seed=2, eps=0.05),
    ]
    log = Arena(ArenaConfig(queries=500, benign_ratio=0.1)).run(
        d, advs, split.x_test, split.y_test, seed=0
    )
    assert (log.adversary == 0).sum() == 500
    assert (log.adversary == 1).sum() == 500
    assert log.adversaries == ["test-set", "noisy-repeat"]
    assert log.noisy[log.adversary == 1].any()


def test_noisy_repeat_stays_in_bounds_and_close() -> None:
    x = np.random.default_rng(0).random((20, 64)).astype(np.float32)
    y = np.arange(20) % 10
    a = NoisyRepeatAttack(x, y, 10, seed=0, eps=0.03)
    a.propose(1)
    a.observe(np.array([(y[a._last.source[0]] + 1) % 10]))  # a mistake
    p = a.propose(8)
    assert p.noisy.all()
    base = x[p.source]
    assert np.abs(p.x - base).max() <= 0.03 + 1e-6
    assert p.x.min() >= x.min() and p.x.max() <= x.max()
    assert len({row.tobytes() for row in p.x}) == len(p.x)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("queries", 0),
        ("benign_ratio", -1.0),
        ("duplicate_share", 1.5),
        ("lifetime", -1),
        ("adversary_batch", -2),
        ("benign_clients", 0),
    ],
)
def test_bad_arena_config(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        ArenaConfig(**{field: value})


@pytest.mark.parametrize(
    ("factory", "params", "message"),
    [
        (TargetedTestSetAttack, {"target": 12}, "target must be a class"),
        (TestSetAttack, {"patience": 0}, "patience must be >= 1"),
        (NoisyRepeatAttack, {"eps": 0.0}, "eps must be > 0"),
        (NoisyRepeatAttack, {"norm": "l3"}, "norm must be"),
        (RateTrackingAttack, {"arms": 0}, "arms must be >= 1"),
        (RateTrackingAttack, {"policy": "greedy"}, "policy must be"),
    ],
)
def test_bad_attack_parameters(factory, params, message) -> None:
    x = np.zeros((5, 3), np.float32)
    y = np.arange(5)
    with pytest.raises(ConfigError, match=message):
        factory(x, y, 10, **params)


def test_unknown_attack_name() -> None:
    with pytest.raises(ConfigError, match="unknown attack 'test_set'"):
        build_adversary("test_set", np.zeros((2, 2), np.float32), np.arange(2), 2)
