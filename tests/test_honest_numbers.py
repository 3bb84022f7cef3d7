"""Predictions against the attacker the arena runs, checked so that wrong formulas fail.

Each test names the bug it catches. The laws are checked exactly against enumeration
over every order a pool can be drawn in; the arena is checked against the laws over
many seeds with tolerances of three analytic standard errors (the law's own variance),
never a fixed floor.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from movingtarget.arena import Arena, ArenaConfig, DeploymentSeeds
from movingtarget.attacks import build_adversary
from movingtarget.defenses import build_defense
from movingtarget.metrics import FirstMistake, FreshOnly, attack_metrics, predict, repeat_mask
from movingtarget.metrics import test_set_prediction as iid_closed_form

Z = 3.0


class Table:
    """A model that answers pool item ``i`` (its first feature) with row ``i`` of a table
    of class probabilities."""

    def __init__(self, proba: np.ndarray) -> None:
        self.proba = np.asarray(proba, dtype=np.float64)
        self.n_classes = self.proba.shape[1]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.proba[np.asarray(x[:, 0]).astype(np.int64)]


def one_hot(labels: list[int], k: int) -> np.ndarray:
    return np.eye(k)[labels]


def pool(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32)[:, None]


# -- the laws, exactly, by enumeration --------------------------------------------------


def enumerate_first_mistake(n: int, k: int, m: int) -> tuple[float, float, list[float]]:
    """Mean and variance of r~ and the mean cumulative curve, over every draw order."""
    values, curves = [], []
    for wins in itertools.combinations(range(n), k):
        t_first = min(wins) + 1
        values.append(max(m - t_first + 1, 0) / m)
        curves.append([max(t - t_first + 1, 0) / t for t in range(1, m + 1)])
    arr = np.array(values)
    return float(arr.mean()), float(arr.var()), np.mean(curves, axis=0).tolist()


def enumerate_fresh_only(n: int, k: int, m: int, patience: int) -> tuple[float, float]:
    values = []
    for wins in itertools.combinations(range(n), k):
        sent = won = 0
        for item in range(n):
            sent += 1
            if sent > m:
                break
            if item in wins:
                won += 1
                sent += patience  # the refused repeats
        values.append(won / m)
    arr = np.array(values)
    return float(arr.mean()), float(arr.var())


@pytest.mark.parametrize(("n", "k", "m"), [(7, 2, 5), (7, 2, 12), (8, 1, 8), (6, 3, 20)])
def test_first_mistake_law_is_exact(n: int, k: int, m: int) -> None:
    # catches a dropped "+1" (off by 1/m), i.i.d. E[T] = 1/r, or a wrong variance
    mean, var, curve = enumerate_first_mistake(n, k, m)
    law = FirstMistake(n, k)
    assert law.mean(m) == pytest.approx(mean, abs=1e-12)
    assert law.variance(m) == pytest.approx(var, abs=1e-12)
    assert law.curve(range(1, m + 1)).tolist() == pytest.approx(curve, abs=1e-12)
    assert law.expected_first() == pytest.approx((n + 1) / (k + 1))


@pytest.mark.parametrize(
    ("n", "k", "m", "patience"), [(8, 3, 6, 1), (8, 3, 30, 1), (9, 2, 7, 2), (7, 4, 9, 1)]
)
def test_fresh_only_law_is_exact(n: int, k: int, m: int, patience: int) -> None:
    mean, var = enumerate_fresh_only(n, k, m, patience)
    law = FreshOnly(n, k, patience)
    assert law.mean(m) == pytest.approx(mean, abs=1e-12)
    assert law.variance(m) == pytest.approx(var, abs=1e-12)


def test_iid_formulas_are_the_papers() -> None:
    assert iid_closed_form(0.02, 10_000) == pytest.approx(0.9951)
    assert FirstMistake(100, 2).iid_mean(10_000) == pytest.approx(0.9951)
    assert FreshOnly(10**6, 2 * 10**4).iid_mean(10_000) == pytest.approx(0.02 / 1.02)


# -- the arena against the laws, over many seeds ------------------------------------------


def replay(
    defense: str,
    attack: str,
    model: Table,
    m: int,
    seeds: int,
    *,
    y: list[int],
    logs: bool = False,
    **params: object,
):
    """Measured metrics per seed and the predictions, each component on its own stream
    (and the event logs, with ``logs``)."""
    n = len(model.proba)
    x = pool(n)
    labels = np.asarray(y, dtype=np.int64)
    measured, preds, kept = [], [], []
    for s in range(seeds):
        streams = DeploymentSeeds.from_seed(s)
        d = build_defense(defense, model, seed=streams.defense)  # type: ignore[arg-type]
        a = build_adversary(attack, x, labels, model.n_classes, seed=streams.adversary, **params)
        preds.append(predict(d, a, m))
        log = Arena(ArenaConfig(queries=m, benign_ratio=0)).run(
            d, [a], x[:0], labels[:0], seed=streams.arena
        )
        measured.append(attack_metrics(log))
        kept.append(log)
    return (measured, preds, kept) if logs else (measured, preds)


def agree(measured: np.ndarray, preds: list, variances: np.ndarray | None = None) -> None:
    value = float(np.mean([p.value for p in preds]))
    var = np.array([p.variance for p in preds]) if variances is None else variances
    se = float(np.sqrt(var.sum()) / len(measured))
    assert se > 0
    assert abs(measured.mean() - value) <= Z * se, (measured.mean(), value, se)


# 12 inputs of class 0; the model answers 3 of them with class 2 (wrong)
Y12 = [0] * 12
WRONG3 = one_hot([2, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0, 0], 3)


def test_test_set_attack_on_a_fixed_model_matches_the_law_without_replacement() -> None:
    measured, preds = replay("deterministic", "test-set", Table(WRONG3), 20, 600, y=Y12)
    r_tilde = np.array([mm.r_tilde for mm in measured])
    agree(r_tilde, preds)
    # the paper's i.i.d. value is far off here: E[T] = 1/r = 4 against (n+1)/(K+1) = 3.25
    assert abs(r_tilde.mean() - preds[0].iid) > 5 * r_tilde.std() / np.sqrt(len(r_tilde))


def test_targeted_prediction_counts_only_inputs_not_of_the_target_class() -> None:
    # 10 inputs of class 0 (2 answered as the target 1) and 10 of class 1 answered 1:
    # counting those as wins would predict a first success far sooner
    y = [0] * 10 + [1] * 10
    labels = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0] + [1] * 10
    model = Table(one_hot(labels, 2))
    measured, preds = replay("deterministic", "test-set-targeted", model, 15, 600, y=y, target=1)
    assert preds[0].supply == 10 and preds[0].mistakes == 2
    agree(np.array([mm.r_tilde for mm in measured]), preds)


def test_memorization_pays_only_fresh_mistakes() -> None:
    # letting the first repeat through would double each mistake's pay-out
    measured, preds = replay("memorize-abstain", "test-set", Table(WRONG3), 10, 600, y=Y12)
    assert preds[0].kind == "=" and not preds[0].law.runs_out(10)
    agree(np.array([mm.r_tilde for mm in measured]), preds)


def test_memorization_holds_an_attacker_whose_pool_runs_out_to_k_over_m() -> None:
    measured, preds = replay("memorize-abstain", "test-set", Table(WRONG3), 40, 20, y=Y12)
    assert preds[0].law.runs_out(40) and preds[0].variance == 0.0
    assert [mm.r_tilde for mm in measured] == [3 / 40] * 20


def test_memorize_random_answers_repeats_uniformly() -> None:
    measured, preds, logs = replay(
        "memorize-random", "test-set", Table(WRONG3), 60, 200, y=Y12, logs=True
    )
    rates = np.array([mm.r_tilde_repeats for mm in measured])
    assert preds[0].kind == "repeats" and preds[0].value == pytest.approx(2 / 3)
    # per run: the repeat-only rate of N repeats has variance p(1-p)/N
    counts = np.array([int(repeat_mask(log.source).sum()) for log in logs])
    agree(rates, preds, np.array([p.variance for p in preds]) / counts)


# an input wrong 55 % of the time under sampling; the others right 90 % of the time
STOCHASTIC = np.array([[0.45, 0.55]] + [[0.9, 0.1]] * 11)


def test_sampling_answers_at_the_models_probabilities() -> None:
    # an argmax in place of sampling answers class 1 every time
    d = build_defense("stochastic", Table(STOCHASTIC), seed=3)  # type: ignore[arg-type]
    n = 20_000
    answers = d.answer(np.zeros((n, 1), np.float32), np.ones(n, np.int64), np.arange(n)).labels
    p = float((answers == 1).mean())
    assert abs(p - 0.55) <= 4 * np.sqrt(0.55 * 0.45 / n)


def test_rate_tracking_stays_under_its_best_arms_rate() -> None:
    # the late bound is the best arm's sampled error (0.55): a deterministic answer in
    # place of sampling would give 1.0
    measured, preds = replay(
        "stochastic", "rate-tracking", Table(STOCHASTIC), 2000, 10, y=[0] * 12, arms=12
    )
    late = np.array([mm.r_tilde_late for mm in measured])
    assert preds[0].kind == "late" and preds[0].value == pytest.approx(0.55)
    # each late query wins with chance at most 0.55: binomial s.e. at the bound
    se = np.sqrt(0.55 * 0.45 / (1000 * len(late)))
    assert late.mean() <= 0.55 + Z * se
    # and the tracker did find the arm (the bound is approached, not reached)
    assert late.mean() >= 0.5


# -- independent streams -------------------------------------------------------------------


def test_each_component_draws_from_its_own_stream() -> None:
    streams = DeploymentSeeds.from_seed(7)
    n = 10_000
    d = np.random.default_rng(streams.defense).random(n)
    a = np.random.default_rng(streams.adversary).random(n)
    b = np.random.default_rng(streams.arena).random(n)
    for u, v in ((d, a), (d, b), (a, b)):
        assert abs(np.corrcoef(u, v)[0, 1]) <= 4 / np.sqrt(n)


def test_the_runner_seeds_defense_and_attacker_apart() -> None:
    # a stochastic defense's draws and the attacker's order: replayed by hand with the
    # spawned streams, the runner's result must come out the same
    from movingtarget.experiment import load_config, run_experiment
    from movingtarget.experiment.runner import prepare

    cfg = load_config(
        "hello-world",
        overrides=[
            "seeds=[3]",
            "arena.queries=300",
            "arena.benign_ratio=0",
            'defenses=["stochastic"]',
            'attacks=[{name = "test-set"}]',
        ],
    )
    result = run_experiment(cfg, workers=1)
    prepared = prepare(cfg, cfg.split_seed)
    streams = DeploymentSeeds.from_seed(3)
    d = build_defense("stochastic", prepared.model, seed=streams.defense)
    pools = prepared.pools
    a = build_adversary(
        "test-set", pools.attacker_x, pools.attacker_y, d.n_classes, seed=streams.adversary
    )
    log = Arena(cfg.arena).run(d, [a], pools.benign_x, pools.benign_y, seed=streams.arena)
    assert result.runs[0]["r_tilde"] == attack_metrics(log).r_tilde
    # with one shared stream the run differs (the draws would line up)
    d = build_defense("stochastic", prepared.model, seed=3)
    a = build_adversary("test-set", pools.attacker_x, pools.attacker_y, d.n_classes, seed=3)
    shared = Arena(cfg.arena).run(d, [a], pools.benign_x, pools.benign_y, seed=3)
    assert not np.array_equal(shared.answer, log.answer)


# -- the shipped configs ---------------------------------------------------------------


@pytest.fixture(scope="module")
def hello_world():
    from movingtarget.experiment import load_config, run_experiment

    return run_experiment(load_config("hello-world"), workers=2)


def rows_by(results) -> dict[tuple[str, str], dict]:
    return {(r["attack"], r["defense"]): r for r in results.rows}


def test_default_experiment_is_in_the_papers_regime(hello_world) -> None:
    # the attacker explores fresh inputs all run long: memorization gives r/(1+r), not K/m
    row = rows_by(hello_world)[("test-set", "memorize-abstain")]
    assert row["supply"] >= row["queries"] and row["ran_out"] == 0
    r = row["rate"]
    assert abs(row["r_tilde"] - r / (1 + r)) <= Z * row["r_tilde_predicted_se"]
    assert row["r_tilde"] < row["bound_k_over_m"]  # held by the mechanism, not the pool


@pytest.mark.parametrize("config", ["hello-world", "synthetic"])
def test_every_predicted_row_of_the_paper_regime_configs_agrees(config, hello_world) -> None:
    from movingtarget.experiment import load_config, run_experiment

    results = hello_world if config == "hello-world" else None
    if results is None:
        results = run_experiment(load_config(config), workers=2)
    judged = [r for r in results.rows if r["verdict"] != "—"]
    assert len(judged) >= 12
    bad = [(r["attack"], r["defense"], r["z"]) for r in judged if r["verdict"] != "agrees"]
    assert not bad
    for r in results.rows:
        assert r["verdict"] == "—" or r["prediction"]


def test_report_states_pools_verdicts_and_regimes(tmp_path) -> None:
    from movingtarget.experiment import load_config, run_experiment
    from movingtarget.report import write_report

    cfg = load_config("hello-world", overrides=["seeds=3"])
    run_experiment(cfg, tmp_path, workers=2)
    text = write_report(tmp_path).read_text()
    assert "verdict (z)" in text and "agrees (z = " in text
    assert "pool n: ran out" in text and "451: no" in text
    assert "on the attacker's pool: r = " in text and "on the benign pool: r = " in text
    # the rate tracker's 60 arms are all swept: its supply runs out, and the report says so
    assert "fresh inputs ran out at query 60 in 3 of 3 seeds" in text
    assert "approached as m grows" in text


def test_spambase_pools_hold_no_row_twice() -> None:
    # Spambase repeats some messages byte for byte: they would reach both pools
    from movingtarget.datasets import load_dataset
    from movingtarget.experiment.runner import make_pools

    split = load_dataset("spambase").split(test_size=0.5, seed=0)
    pools = make_pools(split.x_test, split.y_test, "split", 0)
    assert pools.duplicates > 0
    rows = {x.tobytes() for x in pools.attacker_x}
    assert len(rows) == len(pools.attacker_x)
    assert not any(x.tobytes() in rows for x in pools.benign_x)
    benign = {x.tobytes() for x in pools.benign_x}
    assert len(benign) == len(pools.benign_x)


def test_spambase_memorization_abstains_on_no_fresh_benign_message_and_runs_out() -> None:
    from movingtarget.experiment import load_config, run_experiment

    cfg = load_config("spambase", overrides=["seeds=2", 'defenses=["memorize-abstain"]'])
    results = run_experiment(cfg, workers=2)
    row = results.rows[0]
    assert row["abstain_benign_false"] == 0.0
    # m = 10,000 against about 1,150 messages: the pool runs out, r~ is exactly K/m
    assert row["ran_out"] == 2 and row["r_tilde"] == pytest.approx(row["bound_k_over_m"])
    assert row["verdict"] == "agrees"


def test_no_mistake_in_the_attackers_pool_is_said() -> None:
    from movingtarget.experiment import load_config, run_experiment

    cfg = load_config(
        "synthetic",
        overrides=["seeds=2", "model.r=0.001", 'defenses=["deterministic"]'],
    )
    results = run_experiment(cfg, workers=1)
    row = rows_by(results)[("test-set", "deterministic")]
    assert row["mistakes"] == 0 and row["r_tilde"] == 0.0
    assert "fewer than 5" in row["warning"]


def test_small_r_on_fashion_mnist_matches_the_law_without_replacement() -> None:
    # r = 0.001: about 17 mistakes among the attacker's 17,500 inputs, so the pool
    # supports the regime that digits cannot (one mistake in its whole test split)
    from movingtarget.experiment import load_config, run_experiment

    cfg = load_config(
        "synthetic",
        overrides=[
            "dataset.name=fashion-mnist",
            "model.r=0.001",
            "seeds=20",
            "arena.queries=10000",
            "arena.benign_ratio=0.1",
            'defenses=["deterministic"]',
            'attacks=[{name = "test-set"}]',
        ],
    )
    row = run_experiment(cfg, workers=2).rows[0]
    assert row["supply"] >= 17_000 and row["mistakes"] >= 10 and not row["warning"]
    assert row["se_used"] == "analytic"
    assert abs(row["r_tilde"] - row["r_tilde_predicted"]) <= Z * row["r_tilde_predicted_se"]
    assert row["verdict"] == "agrees"


def test_resample_data_redraws_the_split_per_seed(tmp_path) -> None:
    import json

    from movingtarget.experiment import load_config, run_experiment
    from movingtarget.report import write_report

    cfg = load_config(
        "hello-world",
        overrides=[
            "seeds=3",
            'resample="data"',
            'defenses=["deterministic"]',
            'attacks=[{name = "test-set"}]',
        ],
    )
    results = run_experiment(cfg, tmp_path, workers=1)
    assert [run["split_seed"] for run in results.runs] == [0, 1, 2]
    # another split: another pool, so another count of mistakes in it
    mistakes = {run["prediction"]["mistakes"] for run in results.runs}
    assert len(mistakes) > 1
    meta = json.loads((tmp_path / "experiment.json").read_text())
    assert meta["resample"] == "data" and meta["split_seeds"] == [0, 1, 2]
    assert "seeds redraw the split" in write_report(tmp_path).read_text()
    assert results.rows[0]["verdict"] == "agrees"


def test_resample_is_checked() -> None:
    from movingtarget.errors import ConfigError
    from movingtarget.experiment import load_config

    with pytest.raises(ConfigError, match="resample must be 'order' or 'data'"):
        load_config("hello-world", overrides=['resample="split"'])
