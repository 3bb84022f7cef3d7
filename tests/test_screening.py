"""White-box offline screening and the perturbation-boosted test set attack (Goodfellow
2019, section 6), against a neural model on digits.

Figures: ``pytest -q -s tests/test_screening.py`` prints each measurement.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np
import pytest

from movingtarget import ConfigError
from movingtarget.arena import Arena, ArenaConfig
from movingtarget.attacks import ATTACKS, BoostedTestSetAttack, ScreeningAttack, build_adversary
from movingtarget.datasets import load_dataset
from movingtarget.defenses import build_defense
from movingtarget.experiment.runner import Pools, make_pools
from movingtarget.metrics.measured import AttackMetrics, attack_metrics
from movingtarget.models import Model, build_model

pytest.importorskip("torch")
pytest.importorskip("art")

SEEDS = range(20)


@pytest.fixture(scope="module")
def deployed() -> tuple[Model, Pools, float]:
    """The torch-mlp on digits, disjoint attacker and benign pools, and ``r`` on the
    attacker's pool (what natural sampling draws from)."""
    split = load_dataset("digits").split(test_size=0.3, seed=0)
    model = build_model("torch-mlp", split, seed=0, device="cpu")
    pools = make_pools(split.x_test, split.y_test, "split", 0)
    wrong = model.predict_proba(pools.attacker_x).argmax(axis=1) != pools.attacker_y
    return model, pools, float(wrong.mean())


def deploy(
    deployed: tuple[Model, Pools, float],
    attack: str,
    defense: str,
    seed: int,
    queries: int,
    **params: Any,
) -> tuple[Any, AttackMetrics]:
    model, pools, _ = deployed
    d = build_defense(defense, model, seed=seed)
    a = build_adversary(
        attack, pools.attacker_x, pools.attacker_y, d.n_classes, seed=seed, model=model, **params
    )
    cfg = ArenaConfig(queries=queries, benign_ratio=0.1)
    log = Arena(cfg).run(d, [a], pools.benign_x, pools.benign_y, seed=seed)
    return a, attack_metrics(log)


def mean_se(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, np.float64)
    return float(arr.mean()), float(arr.std(ddof=1) / np.sqrt(len(arr)))


# -- screening -----------------------------------------------------------------------

#: Below the attacker's pool (272 distinct digits): the natural attacker explores
#: fresh inputs all run long, where memorization's cap at r applies.
SCREEN_QUERIES = 250


def test_screening_defeats_exact_memorization(deployed) -> None:
    """With an offline budget the attacker presents only distinct mistakes: exact
    memorization never sees a repeat and r~ goes to 1; without one (budget 0, the
    natural test set attack) memorization holds r~ at r."""
    _, _, r = deployed
    # runs of 32: the attack spans several rounds (each must bring new mistakes)
    screen = {"budget": 1000, "max_commit": 32}
    no_screen = {**screen, "budget": 0}
    screened, natural, found = [], [], []
    for seed in SEEDS:
        a, m = deploy(deployed, "screening", "memorize-abstain", seed, SCREEN_QUERIES, **screen)
        screened.append(m.r_tilde)
        found.append(a.screened["natural"] + a.screened["perturbed"] + a.screened["noisy"])
        assert a.screened["spent"] <= 1000
        _, m = deploy(deployed, "screening", "memorize-abstain", seed, SCREEN_QUERIES, **no_screen)
        natural.append(m.r_tilde)
    s_mean, s_se = mean_se(screened)
    n_mean, n_se = mean_se(natural)
    print(
        f"\nscreening vs memorize-abstain, m={SCREEN_QUERIES}, {len(SEEDS)} seeds: "
        f"budget 1000: r~ = {s_mean:.4f} +- {s_se:.4f} (distinct mistakes screened: mean "
        f"{np.mean(found):.0f}); budget 0: r~ = {n_mean:.4f} +- {n_se:.4f}; r = {r:.4f}"
    )
    assert s_mean > 0.95
    assert n_mean <= r + n_se


def test_screening_without_budget_is_the_test_set_attack(deployed) -> None:
    """Budget 0 hands every query to the natural test set attack of the same seed."""
    model, pools, _ = deployed
    a = build_adversary(
        "screening", pools.attacker_x, pools.attacker_y, 10, seed=4, model=model, budget=0
    )
    b = build_adversary("test-set", pools.attacker_x, pools.attacker_y, 10, seed=4)
    d = build_defense("memorize-abstain", model)
    logs = [
        Arena(ArenaConfig(queries=120, benign_ratio=0)).run(d, [x], pools.benign_x, pools.benign_y)
        for x in (a, b)
    ]
    assert (logs[0].source == logs[1].source).all()
    assert (logs[0].answer == logs[1].answer).all()


def test_screened_queries_are_distinct_mistakes(deployed) -> None:
    """Every screened query is a mistake of the model and none is sent twice; the stages
    run in order and stay within the budget."""
    model, pools, _ = deployed
    a = ScreeningAttack(pools.attacker_x, pools.attacker_y, 10, model=model, seed=1, budget=1200)
    p = a.propose(400, exactly=True)
    total = a.screened["natural"] + a.screened["perturbed"] + a.screened["noisy"]
    assert 0 < a.screened["natural"] < a.screened["perturbed"] and a.screened["noisy"] > 0
    assert a.screened["spent"] == 1200
    assert total >= 400
    assert (model.predict_proba(p.x).argmax(axis=1) != p.y_true).all()
    assert len(np.unique(p.x.reshape(len(p.x), -1), axis=0)) == len(p.x)
    assert np.abs(p.x - pools.attacker_x[p.source]).max() <= 0.1 + 0.01 + 1e-6


def test_screening_then_repeat_or_noisy(deployed) -> None:
    """Once the screened mistakes are used up: ``then="repeat"`` sends them again (an exact
    memory refuses them), ``then="noisy"`` fresh variants (most still mistakes)."""
    late = {}
    for then in ("repeat", "noisy"):
        a, m = deploy(deployed, "screening", "memorize-abstain", 0, 400, budget=280, then=then)
        assert sum(a.screened[k] for k in ("natural", "perturbed", "noisy")) < 200
        late[then] = m.r_tilde_late
    print(f"\nafter the screened mistakes run out: late r~ {late}")
    assert late["repeat"] == 0.0
    assert late["noisy"] > 0.9


# -- the boosted test set attack -----------------------------------------------------


def first_mistakes(deployed, attack: str, **params: Any) -> list[float]:
    out = []
    for seed in SEEDS:
        a, m = deploy(deployed, attack, "deterministic", seed, 300, **params)
        assert not np.isnan(m.queries_to_first_mistake)
        if isinstance(a, BoostedTestSetAttack):
            assert a.first_mistake == m.queries_to_first_mistake
        out.append(m.queries_to_first_mistake)
    return out


@pytest.mark.parametrize("mode", ["white-box", "transfer"])
def test_boosted_finds_its_first_mistake_sooner(deployed, mode: str) -> None:
    """Perturbing the explored inputs (the deployed model's gradients, or a surrogate's
    trained on the attacker's own pool) finds the first mistake in fewer queries than
    natural sampling's, about 1/r."""
    _, _, r = deployed
    natural = first_mistakes(deployed, "test-set")
    boosted = first_mistakes(deployed, "boosted-test-set", mode=mode)
    n_mean, n_se = mean_se(natural)
    b_mean, b_se = mean_se(boosted)
    se = float(np.hypot(n_se, b_se))
    print(
        f"\nqueries to first mistake, {len(SEEDS)} seeds: test-set {n_mean:.1f} +- {n_se:.1f} "
        f"(1/r = {1 / r:.1f}); boosted-test-set {mode} {b_mean:.2f} +- {b_se:.2f}"
    )
    assert n_mean - b_mean > 3 * se


def test_boosted_exploits(deployed) -> None:
    """After the first mistake: exact repeats are refused by exact memorization, noisy
    repeats and distinct perturbed inputs are not."""
    r_tilde = {}
    for exploit in ("repeat", "noisy-repeat", "distinct"):
        rates = [
            deploy(deployed, "boosted-test-set", "memorize-abstain", s, 250, exploit=exploit)[1]
            for s in range(5)
        ]
        r_tilde[exploit] = float(np.mean([m.r_tilde for m in rates]))
    print(f"\nboosted-test-set (white-box) vs memorize-abstain, m=250: r~ {r_tilde}")
    # repeats are all refused: only the explored queries can win, about half of them
    assert r_tilde["repeat"] < 0.5
    assert r_tilde["noisy-repeat"] > 0.9
    assert r_tilde["distinct"] > r_tilde["repeat"]


def test_transfer_mode_never_gets_the_deployed_model(deployed) -> None:
    model, pools, _ = deployed
    a = build_adversary(
        "boosted-test-set", pools.attacker_x, pools.attacker_y, 10, model=model, mode="transfer"
    )
    assert a.model is None  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="black-box"):
        BoostedTestSetAttack(pools.attacker_x, pools.attacker_y, 10, mode="transfer", model=model)


# -- configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attack", "params", "field"),
    [
        ("screening", {"budget": -1}, "budget"),
        ("screening", {"budget": 1.5}, "budget"),
        ("screening", {"perturb": ["deepfool"]}, "perturb"),
        ("screening", {"then": "again"}, "then"),
        ("screening", {"eps": 0}, "eps"),
        ("screening", {"noise": -0.1}, "noise"),
        ("boosted-test-set", {"mode": "grey-box"}, "mode"),
        ("boosted-test-set", {"exploit": "twice"}, "exploit"),
        ("boosted-test-set", {"attack": "square"}, "attack"),
        ("boosted-test-set", {"norm": "1"}, "norm"),
        ("boosted-test-set", {"mode": "transfer", "surrogate": "nope"}, "nope"),
    ],
)
def test_bad_parameters_name_the_field(deployed, attack: str, params: dict, field: str) -> None:
    model, pools, _ = deployed
    with pytest.raises(ConfigError, match=field) as err:
        build_adversary(attack, pools.attacker_x, pools.attacker_y, 10, model=model, **params)
    assert str(err.value).count("\n") == 0


@pytest.mark.parametrize(("attack", "params"), [("screening", {}), ("boosted-test-set", {})])
def test_white_box_attacks_need_the_model(deployed, attack: str, params: dict) -> None:
    _, pools, _ = deployed
    with pytest.raises(ConfigError, match="needs the deployed model"):
        build_adversary(attack, pools.attacker_x, pools.attacker_y, 10, **params)
    assert getattr(ATTACKS.get(attack), "needs_model", None) is not None


def test_the_runner_hands_white_box_attacks_the_model(tmp_path) -> None:
    """Through an experiment: the runner passes the deployed model, and the summary
    reports queries to the first mistake beside natural sampling's 1/r."""
    from movingtarget.experiment import load_config, run_experiment

    p = tmp_path / "screening.toml"
    p.write_text(
        'name = "screening"\nseeds = 2\ntest_size = 0.3\ndefenses = ["memorize-abstain"]\n'
        '[dataset]\nname = "digits"\n[model]\nname = "logistic"\n'
        "[arena]\nqueries = 200\nbenign_ratio = 0.1\n"
        '[[attacks]]\nname = "test-set"\n'
        '[[attacks]]\nname = "screening"\nbudget = 1000\n'
        '[[attacks]]\nname = "boosted-test-set"\neps = 0.2\n'
    )
    results = run_experiment(load_config(p), workers=1, cache_dir=tmp_path / "cache")
    rows = {row["attack"]: row for row in results.rows}
    assert rows["screening"]["r_tilde"] > 0.95
    assert rows["test-set"]["r_tilde"] < 0.2
    natural = rows["test-set"]["queries_to_first_mistake_natural"]
    assert natural == pytest.approx(1 / results.r)
    assert rows["boosted-test-set"]["queries_to_first_mistake"] < natural


def test_art_is_imported_only_to_perturb() -> None:
    """Without ART the attacks still import and natural screening runs; perturbing
    names the ``attacks`` extra."""
    code = (
        "import sys; sys.modules['art'] = None\n"
        "from movingtarget.attacks import build_adversary\n"
        "from movingtarget.datasets import load_digits\n"
        "from movingtarget.errors import ConfigError\n"
        "from movingtarget.models import build_model\n"
        "split = load_digits().split(seed=0)\n"
        "model = build_model('logistic', split, cache_dir=sys.argv[1])\n"
        "x, y = split.x_test, split.y_test\n"
        "a = build_adversary('screening', x, y, 10, model=model, budget=50, perturb=[])\n"
        "print('natural', len(a.propose(5)))\n"
        "a = build_adversary('screening', x, y, 10, model=model, budget=5000)\n"
        "try:\n    a.propose(5)\nexcept ConfigError as e:\n    print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with tempfile.TemporaryDirectory() as cache:
        out = subprocess.run(
            [sys.executable, "-c", code, cache], capture_output=True, text=True, env=env, check=True
        )
    assert "natural 5" in out.stdout
    assert "'art'" in out.stdout and "movingtarget[attacks]" in out.stdout
