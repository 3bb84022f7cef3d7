"""The hello-world analysis, checked against its closed forms (Goodfellow, 2019).

The synthetic classifier errs on exactly round(r * n) test inputs, so every claim
here is about a known ``r``. Tolerances are standard errors of the seed average
(or binomial standard errors), never tuned to pass.
"""

from __future__ import annotations

import numpy as np
import pytest

from movingtarget.arena import Arena, ArenaConfig
from movingtarget.attacks import build_adversary, success
from movingtarget.datasets import load_dataset
from movingtarget.defenses import build_defense
from movingtarget.metrics import FirstMistake, FreshOnly, attack_metrics, predict, repeat_mask
from movingtarget.metrics import test_set_prediction as closed_form
from movingtarget.models import build_model

M = 10_000
R = 0.02


@pytest.fixture(scope="module")
def synthetic() -> tuple[object, np.ndarray, np.ndarray]:
    split = load_dataset("digits").split(test_size=0.3, seed=0)
    model = build_model("synthetic", split, seed=0, r=R)
    return model, split.x_test, split.y_test


def run(
    model: object,
    x: np.ndarray,
    y: np.ndarray,
    defense: str,
    attack: str,
    seed: int,
    **params: object,
):
    d = build_defense(defense, model, seed=seed)  # type: ignore[arg-type]
    a = build_adversary(attack, x, y, d.n_classes, seed=seed, **params)
    return Arena(ArenaConfig(queries=M, benign_ratio=0)).run(d, [a], x, y, seed=seed)


def test_closed_form_value() -> None:
    assert closed_form(0.02, 10_000) == pytest.approx(0.9951)
    assert closed_form(0.001, 10_000) == pytest.approx(0.9001)


def test_synthetic_model_errs_at_r(synthetic) -> None:
    model, x, y = synthetic
    errors = int((model.predict_proba(x).argmax(1) != y).sum())
    assert errors == round(R * len(y))


def test_test_set_attack_on_deterministic_model_reaches_closed_form(synthetic) -> None:
    model, x, y = synthetic
    seeds = range(40)
    r_tilde = np.array(
        [attack_metrics(run(model, x, y, "deterministic", "test-set", s)).r_tilde for s in seeds]
    )
    # the exact finite-pool law: T is the first error drawing without replacement from
    # n inputs of which K err, E[T] = (n + 1)/(K + 1); its own variance sets the tolerance
    law = FirstMistake(len(y), round(R * len(y)))
    se = np.sqrt(law.variance(M) / len(r_tilde))
    assert abs(r_tilde.mean() - law.mean(M)) <= 3 * se
    # and the paper's figure: within 0.003 of (m - 1/r + 1)/m = 0.9951
    assert abs(r_tilde.mean() - 0.9951) <= 0.003


def test_memorize_abstain_pays_each_fresh_mistake_once(synthetic) -> None:
    # m = 10,000 against a pool of 540: the pool runs out, and the attacker is held to
    # exactly K/m (each erring input pays once; its repeats are refused)
    model, x, y = synthetic
    k = round(R * len(y))
    assert FreshOnly(len(y), k).runs_out(M)
    for s in range(5):
        r_tilde = attack_metrics(run(model, x, y, "memorize-abstain", "test-set", s)).r_tilde
        assert r_tilde * M == pytest.approx(k)
        assert r_tilde <= R


def test_rate_tracking_approaches_but_stays_under_its_best_arm(synthetic) -> None:
    model, x, y = synthetic
    wrong_argmax = model.predict_proba(x).argmax(1) != y
    assert wrong_argmax.any()  # the premise: some input's argmax is wrong
    late, bounds = [], []
    for s in range(8):
        d = build_defense("stochastic", model, seed=s)  # type: ignore[arg-type]
        a = build_adversary("rate-tracking", x, y, d.n_classes, seed=s)
        bounds.append(predict(d, a, M).value)  # the best sampled error among its arms
        log = Arena(ArenaConfig(queries=M, benign_ratio=0)).run(d, [a], x, y, seed=s)
        late.append(attack_metrics(log).r_tilde_late)
    late_arr, bound = np.array(late), float(np.mean(bounds))
    # each late query wins with chance at most its arm's rate: binomial s.e. at the bound
    se = np.sqrt(bound * (1 - bound) / (M // 2 * len(late_arr)))
    assert late_arr.mean() <= bound + 3 * se
    # the paper's claim: some input's argmax is wrong, so its sampled error exceeds 1/2 and
    # the tracker's late error does too (asymptotically; here m is long enough)
    assert late_arr.mean() >= 0.5


def test_targeted_attack_on_memorize_random_succeeds_on_repeats_at_one_over_k(synthetic) -> None:
    model, x, y = synthetic
    wins = trials = 0
    for s in range(5):
        log = run(model, x, y, "memorize-random", "test-set-targeted", s, target=3)
        adv = log.adversary == 0
        hit = success(log.answer[adv], log.y_true[adv], log.target[adv])
        rep = repeat_mask(log.source[adv])
        wins += int(hit[rep].sum())
        trials += int(rep.sum())
    k = model.n_classes
    p = wins / trials
    se = np.sqrt((1 / k) * (1 - 1 / k) / trials)
    assert trials > 10_000
    assert abs(p - 1 / k) <= 3 * se
